"""The per-check alert state machine (pure) and the sweep state kept between runs (JSON, in shared_state).

Per check: alert after `fail_after` consecutive failures, remind every `remind_s` while it keeps failing,
resolve after `ok_after` consecutive successes with exactly one "resolved" message, and say nothing
otherwise. "warn" counts as a success. A message that could not be delivered is sent again on the next
sweep, so an outage of Mattermost neither loses an alert nor repeats one that got through.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger(__name__)

Action = Literal["alert", "remind", "resolve"]
STATE_NAME = "health-state"
STATE_VERSION = 1


@dataclass(frozen=True)
class AlertPolicy:
    fail_after: int = 3
    ok_after: int = 2
    remind_s: float = 3600.0
    forget_after_s: float = 7 * 86400.0  # states of checks no longer run are dropped after this, unless alerting

    def __post_init__(self) -> None:
        if self.fail_after < 1 or self.ok_after < 1 or self.remind_s <= 0:
            raise ValueError("fail_after and ok_after must be >= 1 and remind_s > 0")


@dataclass(frozen=True)
class AlertState:
    alerting: bool = False
    fails: int = 0  # consecutive
    oks: int = 0  # consecutive
    since: float | None = None  # first failure of the current episode
    notified_at: float | None = None  # last alert/reminder that reached the channel (None: none did yet)
    resolve_pending: bool = False  # recovered, but the "resolved" message has not got through yet
    last_status: str = ""
    last_value: str = ""
    last_seen: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def step(state: AlertState, status: str, value: str, now: float, policy: AlertPolicy) -> tuple[AlertState, Action | None]:
    """Advance one check by one sweep's result; returns the new state and the message due, if any."""
    s = replace(state, last_status=status, last_value=value, last_seen=now)
    if status == "fail":
        s = replace(s, fails=s.fails + 1, oks=0, since=s.since if s.since is not None else now)
        if s.resolve_pending:  # the channel never heard it recover: the old alert still stands
            s = replace(s, alerting=True, resolve_pending=False)
        if not s.alerting:
            if s.fails >= policy.fail_after:
                return replace(s, alerting=True, notified_at=None), "alert"
            return s, None
        if s.notified_at is None:
            return s, "alert"  # the first attempt did not get through
        if now - s.notified_at >= policy.remind_s:
            return s, "remind"
        return s, None
    s = replace(s, oks=s.oks + 1, fails=0)
    if s.alerting:
        if s.oks < policy.ok_after:
            return s, None
        if s.notified_at is None:  # nobody heard the alert: nothing to resolve
            return replace(s, alerting=False, since=None), None
        return replace(s, alerting=False, since=None, resolve_pending=True), "resolve"
    return replace(s, since=None), ("resolve" if s.resolve_pending else None)


def delivered(state: AlertState, action: Action, ok: bool, now: float) -> AlertState:
    """Record whether the message for `action` reached the channel."""
    if not ok:
        return state
    if action == "resolve":
        return replace(state, resolve_pending=False, notified_at=None)
    return replace(state, notified_at=now)


def forget_stale(states: dict[str, AlertState], now: float, policy: AlertPolicy) -> dict[str, AlertState]:
    """Drop checks that have not run for a long time (renamed, removed), unless they are still alerting."""
    return {k: v for k, v in states.items()
            if v.alerting or v.resolve_pending or v.last_seen is None or now - v.last_seen < policy.forget_after_s}


@dataclass(frozen=True)
class Notice:
    """One Mattermost attachment's worth: what changed for one check."""

    check: str
    action: Action
    title: str
    text: str
    level: str
    fields: dict[str, str]


WORDS = {"alert": ("ALERT", "danger"), "remind": ("STILL FAILING", "warning"), "resolve": ("RESOLVED", "good")}


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts is not None else ""


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def notice(check: str, action: Action, before: AlertState, after: AlertState, *, value: str, threshold: str,
           evidence: str, now: float, stack: str) -> Notice:
    """The message for one state change: colour by kind, value and threshold as fields, evidence as text."""
    word, level = WORDS[action]
    since = after.since if after.since is not None else before.since
    fields_: dict[str, str] = {"value": value or "-", "threshold": threshold or "-"}
    if action != "resolve" and since is not None:
        fields_["since"] = iso(since)
        fields_["failing for"] = duration(now - since)
    text = (f"back to normal: {value}" if value else "back to normal") if action == "resolve" else (evidence or value)
    return Notice(check, action, f"{word}: {check} on {stack}", text, level, fields_)


@dataclass
class SweepState:
    """Everything a sweep remembers: alert state per check, and readings kept for rates and sustained CPU."""

    checks: dict[str, AlertState] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"version": STATE_VERSION, "checks": {k: asdict(v) for k, v in sorted(self.checks.items())},
                           "samples": self.samples}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SweepState:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("state is not a JSON object")
        return cls({k: AlertState.from_dict(v) for k, v in (doc.get("checks") or {}).items()},
                   dict(doc.get("samples") or {}))


def parse_state(text: str | None) -> SweepState:
    """The saved state; none is a fresh start, an unreadable one is logged and replaced (never fatal)."""
    if text is None:
        return SweepState()
    try:
        return SweepState.from_json(text)
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("the saved health state was unreadable (%s): starting afresh; the unreadable text was: %.300s",
                    type(exc).__name__, text)
        return SweepState()
