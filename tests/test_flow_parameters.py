"""No flow parameter can choose a command: the n8n CLI's argv and where it runs come from the stack file."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import ConfigError

ROOT = Path(__file__).parent.parent
CLI_BACKUP = Path(__file__).parent / "data" / "n8n" / "cli_backup"
COMMANDISH = re.compile(r"argv|command|cmd|cli_where|exec|shell|script", re.IGNORECASE)


def all_flows():
    """Every flow deployed by prefect.yaml (entrypoint module:function)."""
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    found = {}
    for d in deployments:
        module, _, name = d["entrypoint"].partition(":")
        found[d["entrypoint"]] = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    return found


def test_no_deployed_flow_takes_a_command_parameter():
    flows = all_flows()
    assert "flows/n8n.py:n8n_export" in flows
    offending = {entry: [p for p in inspect.signature(f.fn).parameters if COMMANDISH.search(p)]
                 for entry, f in flows.items()}
    assert not {k: v for k, v in offending.items() if v}, offending


def test_n8n_export_refuses_cli_parameters(tmp_path):
    """A run asking for a command is refused before anything runs (here: before the stack file is even read)."""
    from prefect.exceptions import ParameterBindError

    from flows.n8n import n8n_export

    marker = tmp_path / "pwned"
    schema = n8n_export.parameters.model_dump()["properties"]
    assert "cli_argv" not in schema and "cli_where" not in schema
    for bad in ({"cli_argv": ["sh", "-c", f"touch {marker}"]}, {"cli_where": "worker"}):
        with pytest.raises(ParameterBindError):
            n8n_export(stack_file=str(tmp_path / "missing.yaml"), source="cli", **bad)
    assert not marker.exists()


def _fake_n8n(tmp_path: Path) -> list[str]:
    """An argv that behaves like `n8n export:workflow --backup --output=DIR/` for the recorded CLI backup."""
    script = tmp_path / "fake_n8n.py"
    script.write_text(
        "import shutil, sys\n"
        "assert sys.argv[1:3] == ['export:workflow', '--backup'], sys.argv\n"
        "out = sys.argv[3].removeprefix('--output=')\n"
        f"for name in {sorted(p.name for p in CLI_BACKUP.glob('*.json'))!r}:\n"
        f"    shutil.copy({str(CLI_BACKUP)!r} + '/' + name, out)\n")
    return [sys.executable, str(script)]


def test_the_configured_cli_command_is_what_runs(tmp_path):
    from tasks.n8n import read_workflows

    tree = {"database": {"host": "h", "sslmode": "require"}, "spaces": {"bucket": "b"},
            "docker": {"mode": "local", "base_url": "unix:///nonexistent.sock"},
            "n8n": {"source": "cli", "cli_argv": _fake_n8n(tmp_path), "cli_where": "worker"},
            "state_dir": str(tmp_path / "state")}
    cfg = validate_tree(tree)
    workflows = read_workflows.fn(cfg, "cli")
    expected = sorted(json.loads(p.read_text())["id"] for p in CLI_BACKUP.glob("*.json"))
    assert sorted(w["id"] for w in workflows) == expected


def test_cli_defaults_stay_the_seeds():
    cfg = validate_tree({"database": {"host": "h", "sslmode": "require"}, "spaces": {"bucket": "b"},
                         "docker": {"mode": "local", "base_url": "unix:///x.sock"}})
    assert cfg.n8n.cli_argv == ["n8n"] and cfg.n8n.cli_where == "container"
    with pytest.raises(ConfigError, match="cli_argv"):
        validate_tree({"database": {"host": "h", "sslmode": "require"}, "spaces": {"bucket": "b"},
                       "docker": {"mode": "local", "base_url": "unix:///x.sock"}, "n8n": {"cli_argv": []}})
