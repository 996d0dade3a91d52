"""Module upgrade planning (pure): validate names, read manifests, check dependencies, pick what changed."""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from odoo_stack_ops.errors import OpsError

MODULE = re.compile(r"^[a-z0-9_]{1,64}\Z")
GIT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}\Z")


def check_modules(names: list[str]) -> list[str]:
    """Module names are identifiers only; anything else is refused before a command is built."""
    bad = [n for n in names if not isinstance(n, str) or not MODULE.match(n)]
    if bad:
        raise OpsError(f"refusing module names that are not plain identifiers: {bad!r}")
    return names


def check_ref(ref: str) -> str:
    if not GIT_REF.match(ref) or ".." in ref:
        raise OpsError(f"refusing git ref {ref!r}: letters, digits, . _ / - only")
    return ref


def parse_manifest(text: str) -> dict[str, Any]:
    """An Odoo __manifest__.py is a Python dict literal: read it without executing it."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise OpsError(f"unreadable __manifest__.py: {exc}") from exc
    if not isinstance(value, dict):
        raise OpsError("__manifest__.py is not a dict")
    return value


def addon_hash(listing: str) -> str:
    """Hash of an addon from `sha256sum` lines of its files (path-sorted, path-relative)."""
    lines = sorted(line.split(None, 1)[1].strip() + " " + line.split(None, 1)[0] for line in listing.splitlines()
                   if line.strip() and not line.rstrip().endswith((".pyc", ".po~")))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


@dataclass
class UpgradePlan:
    install: list[str] = field(default_factory=list)
    upgrade: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def nothing_to_do(self) -> bool:
        return not self.install and not self.upgrade


def make_plan(*, install: list[str], upgrade: list[str], changed: bool, manifests: dict[str, dict[str, Any]],
              states: dict[str, str], hashes: dict[str, str], stored: dict[str, str]) -> UpgradePlan:
    """What to run. `manifests` of modules found in the addons paths, `states` from ir_module_module,
    `hashes` of installed addons now, `stored` after the last success."""
    plan = UpgradePlan(hashes=hashes)
    for name in install:
        if name not in manifests:
            plan.problems.append(f"{name}: not found in the addons paths")
        elif manifests[name].get("installable", True) is False:
            plan.problems.append(f"{name}: marked not installable")
        else:
            plan.install.append(name)
    for name in upgrade:
        if states.get(name) != "installed":
            plan.problems.append(f"{name}: cannot upgrade, it is {states.get(name, 'unknown')}")
        else:
            plan.upgrade.append(name)
    if changed:
        for name, digest in sorted(hashes.items()):
            if states.get(name) == "installed" and name not in plan.upgrade and stored.get(name) != digest:
                plan.upgrade.append(name)
            elif name not in plan.upgrade:
                plan.unchanged.append(name)
    wanted = set(plan.install) | set(plan.upgrade)
    for name in sorted(wanted):
        for dep in manifests.get(name, {}).get("depends", []):
            if states.get(dep) != "installed" and dep not in manifests and dep not in wanted:
                plan.problems.append(f"{name}: missing dependency {dep} (neither installed nor in the addons paths)")
    return plan
