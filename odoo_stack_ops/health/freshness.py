"""The dead-man's switch (pure): is the newest product of each scheduled job young enough? Judged from the
data itself (manifests in Spaces, tags in git, the log cursor), so a job that never ran — worker down,
schedule paused, deployment deleted — is noticed although it raised no Failed state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from odoo_stack_ops.backup.manifest import ManifestRef
from odoo_stack_ops.gitops import WEEK_TAG
from odoo_stack_ops.health.alerting import duration
from odoo_stack_ops.health.thresholds import Verdict

N8N_TAG_MAX_AGE_S = 8 * 86400.0  # weekly export, one day of grace
LOG_LAG_MAX_S = 15 * 60.0  # shipping every 5 minutes, two missed runs of grace


def age_verdict(age_s: float | None, max_age_s: float, what: str, detail: str = "") -> Verdict:
    """fail when there is none at all or the newest is older than max_age_s; ok otherwise."""
    threshold = f"{what} younger than {duration(max_age_s)}"
    if age_s is None:
        return Verdict("fail", f"no {what}{' ' + detail if detail else ''}", threshold)
    shown = f"{duration(age_s)} old" + (f" ({detail})" if detail else "")
    return Verdict("fail" if age_s > max_age_s else "ok", shown, threshold)


def newest_verified(refs: Iterable[ManifestRef], is_verified: Callable[[ManifestRef], bool]) -> ManifestRef | None:
    """The newest backup whose manifest says verified, reading manifests newest first (usually one read)."""
    for ref in sorted(refs, key=lambda r: r.taken_at, reverse=True):
        if is_verified(ref):
            return ref
    return None


def week_end(tag: str, tz: str) -> datetime | None:
    """The end of the ISO week a weekly tag names (Monday 00:00 after it, in the stack's time zone)."""
    m = WEEK_TAG.match(tag)
    if not m:
        return None
    try:
        monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError:
        return None
    return datetime.combine(monday + timedelta(weeks=1), time(), ZoneInfo(tz))


def newest_week_tag(tags: Iterable[tuple[str, str, float]], tz: str) -> tuple[str, float] | None:
    """(name, created) of the newest weekly tag, from (name, object type, creator date) as for-each-ref gives
    them. An annotated tag carries the time the export made it; a lightweight one (older exports) only the
    commit's, which may be weeks old when nothing changed, so its week's end stands in for it."""
    found = []
    for name, kind, created in tags:
        end = week_end(name, tz)
        if end is None:
            continue
        found.append((name, created if kind == "tag" else end.timestamp()))
    return max(found, key=lambda t: t[1]) if found else None


def cursor_lags(newest_ns: dict[tuple[str, str], int],
                cursor_ns: dict[tuple[str, str], int]) -> dict[tuple[str, str], float | None]:
    """Seconds of its own log each (container, stream) holds past the shipping cursor (None: never shipped).
    Measured between log stamps, not against the clock, so a quiet container is never late. A stream without a
    cursor while the host has others started after the last pass (the pass ships every stream it sees): it is
    measured from the newest cursor; with no cursor at all, shipping never ran."""
    last = max(cursor_ns.values(), default=None)

    def lag(key: tuple[str, str], ns: int) -> float | None:
        base = cursor_ns.get(key, last)
        return None if base is None else max(0.0, (ns - base) / 1e9)

    return {key: lag(key, ns) for key, ns in newest_ns.items()}


def lag_verdict(lags: dict[tuple[str, str], float | None], max_lag_s: float = LOG_LAG_MAX_S) -> Verdict:
    """The worst stream decides; one never shipped fails at once."""
    threshold = f"shipped within {duration(max_lag_s)} of the newest line"
    never = sorted(f"{c}/{s}" for (c, s), lag in lags.items() if lag is None)
    if never:
        return Verdict("fail", f"never shipped: {', '.join(never)}", threshold)
    if not lags:
        return Verdict("ok", "no log lines yet", threshold)
    (container, stream), worst = max(lags.items(), key=lambda kv: kv[1] or 0.0)
    return Verdict("fail" if (worst or 0.0) > max_lag_s else "ok", f"{duration(worst or 0.0)} behind "
                   f"({container}/{stream})", threshold)
