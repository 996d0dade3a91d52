"""Critical log lines → Mattermost, grouped per container and logger and rate-limited (pure + a JSON state).

A crash loop writes the same error hundreds of times a minute; the channel gets one message per group per
interval, carrying how many lines matched and a few samples, and the lines held back in between are counted
into the next message (sent even if the group has gone quiet, so nothing is silently swallowed). Memory is
bounded: per group a count and at most `samples` lines, at most `max_groups` groups per run and pending.
A message that Mattermost did not accept leaves the group's state as it was, so its lines are reported on
the next run instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from odoo_stack_ops.logs.parse import Row

DEFAULT_LEVELS = ("CRITICAL", "ERROR")
SEVERITY = {"DEBUG": 0, "INFO": 1, "WARNING": 2, "ERROR": 3, "CRITICAL": 4}
OVERFLOW_GROUP = "(other)|-"


class CriticalMatcher:
    """A row is critical when its level is one of `levels` or its message matches one of `patterns`."""

    def __init__(self, levels: Iterable[str] = DEFAULT_LEVELS, patterns: Iterable[str] = ()) -> None:
        self.levels = frozenset(lv.upper() for lv in levels)
        self.patterns = [re.compile(p) for p in patterns]

    def __call__(self, row: Row) -> bool:
        if row[5] in self.levels:
            return True
        return any(p.search(row[7]) for p in self.patterns) if self.patterns else False


def worse(a: str | None, b: str | None) -> str | None:
    return b if SEVERITY.get(b or "", -1) > SEVERITY.get(a or "", -1) else a


@dataclass
class Group:
    count: int = 0
    level: str | None = None
    first: str = ""
    last: str = ""
    samples: list[str] = field(default_factory=list)


class CriticalCollector:
    """Per (container, logger): how many critical lines this run, the worst level, the first samples."""

    def __init__(self, samples: int = 5, max_groups: int = 100, sample_chars: int = 300) -> None:
        self.samples, self.max_groups, self.sample_chars = samples, max_groups, sample_chars
        self.groups: dict[str, Group] = {}
        self.unsaved: dict[str, Group] = {}  # since the last take_unsaved()

    def add(self, row: Row) -> None:
        self._add(self.groups, row)
        self._add(self.unsaved, row)

    def take_unsaved(self) -> dict[str, dict[str, Any]]:
        """The groups of the lines added since the last call (what a committed batch brought), then forgotten."""
        taken, self.unsaved = _as_dict(self.unsaved), {}
        return taken

    def _add(self, groups: dict[str, Group], row: Row) -> None:
        key = f"{row[3]}|{row[6] or '-'}"
        group = groups.get(key)
        if group is None:
            if len(groups) >= self.max_groups:
                key = OVERFLOW_GROUP
                group = groups.setdefault(key, Group())
            else:
                group = groups[key] = Group()
        group.count += 1
        group.level = worse(group.level, row[5])
        stamp = row[1].isoformat()
        group.first = group.first or stamp
        group.last = stamp
        if len(group.samples) < self.samples:
            group.samples.append(f"[{row[5] or '-'}] {row[7][:self.sample_chars]}")

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return _as_dict(self.groups)


def _as_dict(groups: dict[str, Group]) -> dict[str, dict[str, Any]]:
    return {k: {"count": g.count, "level": g.level, "first": g.first, "last": g.last, "samples": list(g.samples)}
            for k, g in groups.items()}


def merge_groups(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], samples: int = 5,
                 max_groups: int = 100) -> dict[str, dict[str, Any]]:
    """Two sets of groups (as_dict) as one: counts added, the worse level, the earlier first and later last line,
    at most `samples` samples (the earlier ones kept). Beyond `max_groups` a new group counts into
    OVERFLOW_GROUP, as within a run: runs that cannot post (Mattermost down for days) add up to a bounded state."""
    out = {k: {**g, "samples": list(g["samples"])} for k, g in a.items()}
    for name, g in b.items():
        key = name if name in out or len(out) < max_groups else OVERFLOW_GROUP
        m = out.get(key)
        if m is None:
            out[key] = {**g, "samples": list(g["samples"])[:samples]}
            continue
        m["count"] += g["count"]
        m["level"] = worse(m["level"], g["level"])
        firsts = [x for x in (m["first"], g["first"]) if x]  # ISO stamps; "" is none
        m["first"] = min(firsts, default="")
        m["last"] = max(m["last"], g["last"])
        m["samples"] = (m["samples"] + g["samples"])[:samples]
    return out


def plan_messages(groups: dict[str, dict[str, Any]], state: dict[str, Any], now: float, min_interval_s: float
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Which groups to post now. A group posts when its last message is at least `min_interval_s` old
    (or it never posted), with this run's lines plus those held back since; otherwise its lines are held
    back. Groups with held-back lines and no new ones post their count once the interval has passed.
    Returns (messages, state if every message is delivered)."""
    state = {k: dict(v) for k, v in state.items()}
    messages = []
    for key in sorted(set(groups) | {k for k, v in state.items() if v.get("held", 0)}):
        g = groups.get(key, {"count": 0, "level": None, "samples": []})
        s = state.setdefault(key, {"last_sent": 0.0, "held": 0})
        if now - s["last_sent"] >= min_interval_s:
            if g["count"] + s["held"] == 0:
                continue
            container, _, logger = key.partition("|")
            messages.append({"group": key, "container": container, "logger": logger, "new": g["count"],
                             "held_before": s["held"], "count": g["count"] + s["held"], "level": g["level"],
                             "samples": g["samples"], "last_sent": s["last_sent"]})
            s["last_sent"], s["held"] = now, 0
        else:
            s["held"] += g["count"]
    return messages, state


def undelivered(state: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """State after Mattermost refused `message`: the group keeps its lines for the next run."""
    state = {k: dict(v) for k, v in state.items()}
    state[message["group"]] = {"last_sent": message["last_sent"], "held": message["count"]}
    return state


def render(message: dict[str, Any]) -> tuple[str, str, str]:
    """(title, text, colour level) for notify()."""
    title = f"{message['count']} critical log line(s) in {message['container']} / {message['logger']}"
    lines = "\n".join(message["samples"]) or "(no new lines since the last message)"
    text = f"```\n{lines}\n```"
    if message["held_before"]:
        since = datetime.fromtimestamp(message["last_sent"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        text += f"\n{message['held_before']} line(s) held back since the last message ({since})."
    return title, text, "danger" if message["level"] in (None, "ERROR", "CRITICAL") else "warning"


def parse_state(text: str | None) -> dict[str, Any]:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}  # a torn or hand-edited state must not stop shipping; worst case one extra message
