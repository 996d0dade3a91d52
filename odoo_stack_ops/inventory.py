"""Many stacks: an inventory lists stacks by name, each a stack file as for one stack.

An inventory is a YAML file with `stacks:` (name → stack file path, relative to the inventory, or the stack's
tree inline) and optional `defaults:` (merged under every stack: the shared cluster, Spaces, the pools), or a
folder of stack files (the name is each file's stem). A single stack file is an inventory of one, named by its
`name:`. Pure: reading files and merging trees, nothing else; config.load_config validates the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from odoo_stack_ops.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}\Z")  # Prefect block, limit and deployment names accept these
DEFAULT_NAME = "odoo-erp-prod"


@dataclass(frozen=True)
class Inventory:
    source: Path
    stacks: dict[str, dict[str, Any]]  # name → configuration tree (defaults merged in)
    single: bool  # a plain stack file: environment variables without a stack prefix apply

    def tree(self, stack: str | None) -> tuple[str, dict[str, Any]]:
        """The named stack's tree; with no name, the only stack (an inventory of many needs a name)."""
        if stack is None:
            if len(self.stacks) == 1:
                return next(iter(self.stacks.items()))
            raise ConfigError(f"{self.source} lists {len(self.stacks)} stacks ({', '.join(sorted(self.stacks))}): "
                              "pass the stack's name (flow parameter `stack`, or --stack)")
        if stack not in self.stacks:
            raise ConfigError(f"no stack {stack!r} in {self.source}; it lists: {', '.join(sorted(self.stacks))}")
        return stack, self.stacks[stack]

    def select(self, asked: list[str] | None) -> list[str]:
        """The stacks one fleet run covers: the asked ones (each must be listed: `tree` says so), else every stack;
        sorted."""
        return sorted({self.tree(name)[0] for name in asked} if asked else self.stacks)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _mapping(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return loaded


def _checked(name: str, tree: dict[str, Any], where: str) -> dict[str, Any]:
    if not NAME.match(name):
        raise ConfigError(f"stack name {name!r} in {where}: use lowercase letters, digits and dashes (max 41), "
                          "as it names Prefect deployments, limits and blocks")
    if tree.get("name", name) != name:
        raise ConfigError(f"stack {name!r} in {where} says name: {tree['name']!r}; the inventory's name is the "
                          "stack's name: make them equal or drop `name:` from the stack file")
    return {**tree, "name": name}


def read(path: str | Path) -> Inventory:
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        if not files:
            raise ConfigError(f"inventory folder {p} holds no *.yaml stack file")
        return Inventory(p, {f.stem: _checked(f.stem, _mapping(f), str(f)) for f in files}, single=False)
    if not p.is_file():
        raise ConfigError(f"stack file {p} does not exist; copy stack.example.yaml and point STACK_OPS_FILE at it")
    doc = _mapping(p)
    if "stacks" not in doc:
        name = str(doc.get("name", DEFAULT_NAME))
        return Inventory(p, {name: doc}, single=True)
    entries, defaults = doc.get("stacks") or {}, doc.get("defaults") or {}
    if not isinstance(entries, dict) or not entries or not isinstance(defaults, dict):
        raise ConfigError(f"{p}: `stacks:` must map each stack's name to its stack file or tree")
    stacks = {}
    for name, entry in entries.items():
        if isinstance(entry, str):
            entry_path = (p.parent / entry).expanduser()
            if not entry_path.is_file():
                raise ConfigError(f"{p}: stack {name!r} points at {entry_path}, which does not exist")
            entry = _mapping(entry_path)  # noqa: PLW2901 - the file stands for its tree
        if not isinstance(entry, dict):
            raise ConfigError(f"{p}: stack {name!r} must be a stack file path or a mapping")
        stacks[str(name)] = _checked(str(name), merged(defaults, entry), str(p))
    return Inventory(p, stacks, single=len(stacks) == 1 and not defaults)


def env_prefix(stack: str) -> str:
    """`prod-sg` → `PROD_SG__`: a stack's own environment variables, e.g. PROD_SG__DB_PASSWORD."""
    return re.sub(r"[^A-Z0-9]", "_", stack.upper()) + "__"


def stack_env(env: dict[str, str], stack: str, single: bool) -> dict[str, str]:
    """The variables that configure this stack: its prefixed ones (prefix removed), and the plain ones only for
    a single stack, so one DB_PASSWORD can never reach every stack of an inventory."""
    prefix = env_prefix(stack)
    own = {k.removeprefix(prefix): v for k, v in env.items() if k.startswith(prefix)}
    return {**env, **own} if single else own
