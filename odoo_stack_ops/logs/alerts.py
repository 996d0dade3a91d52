"""Critical lines to Mattermost: grouped per container and logger, at most one message per group per interval,
with a count of what was held back (pure planning + a tiny JSON state)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

DEFAULT_LEVELS = ("CRITICAL", "ERROR")


def critical_matcher(levels: list[str] | tuple[str, ...], patterns: list[str]) -> Any:
    compiled = [re.compile(p) for p in patterns]
    wanted = {lv.upper() for lv in levels}

    def is_critical(row: tuple[Any, ...]) -> bool:
        return (row[5] or "").upper() in wanted or any(p.search(row[7] or "") for p in compiled)

    return is_critical


def plan_messages(found: list[dict[str, Any]], state: dict[str, Any], now: float, min_interval_s: float
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Group this pass's critical lines; send a group only if its last message is older than min_interval_s,
    folding in the lines suppressed since. Returns (messages, new state)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in found:
        groups[f"{f['container']}|{f.get('logger') or '-'}"].append(f)
    state = {k: dict(v) for k, v in state.items()}
    messages = []
    for key, items in sorted(groups.items()):
        g = state.setdefault(key, {"last_sent": 0.0, "suppressed": 0})
        if now - g["last_sent"] >= min_interval_s:
            messages.append({"group": key, "count": len(items) + g["suppressed"], "sample": items[:5],
                             "suppressed_before": g["suppressed"]})
            g["last_sent"], g["suppressed"] = now, 0
        else:
            g["suppressed"] += len(items)
    return messages, state


def load_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)
