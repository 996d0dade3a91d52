"""Sweep state across runs (alert states, resource samples) as one JSON file, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from odoo_stack_ops.health.evaluate import AlertState


def load(path: Path) -> tuple[dict[str, AlertState], dict[str, Any]]:
    if not path.exists():
        return {}, {}
    doc = json.loads(path.read_text())
    return {k: AlertState(**v) for k, v in doc.get("checks", {}).items()}, doc.get("samples", {})


def save(path: Path, states: dict[str, AlertState], samples: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".health-")
    with os.fdopen(fd, "w") as fh:
        json.dump({"checks": {k: asdict(v) for k, v in states.items()}, "samples": samples}, fh)
    os.replace(tmp, path)
