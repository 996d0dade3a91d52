"""Pure verdicts and the per-check alert state machine (no I/O: tested directly).

Alert after `fail_after` consecutive failures, resolve after `ok_after` successes with exactly one
"resolved" message, remind every `remind_s` while still failing, and otherwise stay quiet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    value: str = ""
    threshold: str = ""
    evidence: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sustained_above(samples: list[tuple[float, float]], threshold: float, window_s: float, now: float) -> bool:
    """True when every sample in the last `window_s` is above threshold and they span the whole window."""
    recent = [(t, v) for t, v in samples if now - t <= window_s + 1e-6]
    older = [t for t, _ in samples if now - t > window_s]
    covered = bool(older) or (recent and now - min(t for t, _ in recent) >= window_s * 0.95)
    return bool(recent) and bool(covered) and all(v > threshold for _, v in recent)


def keep_samples(samples: list[tuple[float, float]], now: float, keep_s: float) -> list[tuple[float, float]]:
    """Samples younger than keep_s, plus the newest older one (it anchors the window's start)."""
    older = [s for s in samples if now - s[0] > keep_s]
    return ([max(older)] if older else []) + [s for s in samples if now - s[0] <= keep_s]


@dataclass
class AlertState:
    alerting: bool = False
    fails: int = 0
    oks: int = 0
    since: float | None = None
    last_sent: float | None = None
    last_value: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertPolicy:
    fail_after: int = 3
    ok_after: int = 2
    remind_s: float = 3600.0


Action = Literal["alert", "remind", "resolve"] | None


def step(state: AlertState, result: CheckResult, now: float, policy: AlertPolicy) -> tuple[AlertState, Action]:
    """Advance one check's state with this sweep's result; returns the new state and what to send."""
    failing = result.status == "fail"
    s = AlertState(**{**asdict(state), "last_value": result.value})
    if failing:
        s.fails, s.oks = s.fails + 1, 0
        if s.since is None:
            s.since = now
        if not s.alerting and s.fails >= policy.fail_after:
            s.alerting, s.last_sent = True, now
            return s, "alert"
        if s.alerting and s.last_sent is not None and now - s.last_sent >= policy.remind_s:
            s.last_sent = now
            return s, "remind"
        return s, None
    s.oks, s.fails = s.oks + 1, 0
    if s.alerting and s.oks >= policy.ok_after:
        s.alerting, s.since, s.last_sent = False, None, now
        return s, "resolve"
    if not s.alerting:
        s.since = None
    return s, None
