"""Pure verdicts against the seed's thresholds (CPU > 80 % for 5 min, memory > 90 %, disk > 85 %,
network > 100 Mbps, the pool of 25), and readings of DigitalOcean Monitoring's Prometheus matrices.

"Sustained" needs history: a CPU reading is a Segment (start, end, busy %) between two cumulative counter
readings, so a missed sweep makes one longer segment rather than a gap, and the kept segments always cover
the time since the first reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from odoo_stack_ops.config import Thresholds

Status = Literal["ok", "warn", "fail"]
Segment = tuple[float, float, float]  # (start, end, busy percent)


@dataclass(frozen=True)
class Verdict:
    status: Status
    value: str
    threshold: str


def minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def keep_segments(segments: Iterable[Segment], now: float, window_s: float) -> list[Segment]:
    """The segments that still overlap the window ending now (older ones can no longer matter)."""
    return sorted(tuple(s) for s in segments if s[1] > now - window_s)  # type: ignore[misc]


def sustained_above(segments: Iterable[Segment], threshold: float, window_s: float, now: float) -> bool:
    """True when readings cover the whole window ending now and every one of them is above threshold."""
    recent = keep_segments(segments, now, window_s)
    if not recent or recent[0][0] > now - window_s:
        return False  # not enough history yet: one hot minute is not five
    return all(pct > threshold for _, _, pct in recent)


def cpu_verdict(segments: list[Segment], th: Thresholds, now: float, label: str = "") -> Verdict:
    """fail when above the threshold for the whole sustained window; warn when only the latest reading is."""
    threshold = f"> {th.cpu_percent:g} % for {minutes(th.cpu_sustained_s)}"
    if not segments:
        return Verdict("ok", "first reading: no rate yet", threshold)
    latest = max(segments, key=lambda s: s[1])[2]
    value = f"{latest:.1f} %{label}"
    if sustained_above(segments, th.cpu_percent, th.cpu_sustained_s, now):
        return Verdict("fail", value + f", above for {minutes(th.cpu_sustained_s)}", threshold)
    return Verdict("warn" if latest > th.cpu_percent else "ok", value, threshold)


def above(value: float, limit: float, unit: str, shown: str | None = None) -> Verdict:
    """The seed's plain 'metric > threshold' rule."""
    return Verdict("fail" if value > limit else "ok", shown or f"{value:.1f} {unit}".rstrip(),
                   f"> {limit:g} {unit}".rstrip())


def memory_verdict(percent: float, th: Thresholds) -> Verdict:
    return above(percent, th.memory_percent, "%")


def disk_verdict(percent: float, th: Thresholds, detail: str = "") -> Verdict:
    return above(percent, th.disk_percent, "%", f"{percent:.0f} %{detail}")


def rate_mbps(prev_bytes: int, cur_bytes: int, seconds: float) -> float | None:
    """Megabits per second between two byte counters; None on a counter reset or no elapsed time."""
    if seconds <= 0 or cur_bytes < prev_bytes:
        return None
    return round((cur_bytes - prev_bytes) * 8 / seconds / 1e6, 3)


def network_verdict(rx_mbps: float, tx_mbps: float, th: Thresholds) -> Verdict:
    """Inbound and outbound are judged apart, as DigitalOcean's bandwidth alerts are."""
    return above(max(rx_mbps, tx_mbps), th.network_mbps, "Mbps", f"in {rx_mbps:.2f} / out {tx_mbps:.2f} Mbps")


def pool_verdict(used: int, pool: int) -> Verdict:
    """Connections against the cluster's pool: warn from 80 %, fail when full."""
    share = used / pool
    return Verdict("ok" if share < 0.8 else ("warn" if share < 1 else "fail"), f"{used}/{pool}",
                   f"< {int(pool * 0.8)} (80 % of the pool)")


def response_verdict(code: int, seconds: float, slow_s: float, expect: int = 200) -> Verdict:
    """The wanted status code, and a warning when slower than slow_s."""
    status: Status = "fail" if code != expect else ("warn" if seconds > slow_s else "ok")
    return Verdict(status, f"HTTP {code} in {seconds:.3f} s", f"HTTP {expect} within {slow_s:g} s")


def container_verdict(running: bool, status: str, has_healthcheck: bool, health: str | None) -> Verdict:
    """Running, and healthy where a healthcheck exists ("starting" is a warning, not yet a failure)."""
    value = status + (f", {health}" if has_healthcheck and health else "")
    threshold = "running" + (", healthy" if has_healthcheck else "")
    if not running or (has_healthcheck and health == "unhealthy"):
        return Verdict("fail", value, threshold)
    if has_healthcheck and health != "healthy":
        return Verdict("warn", value, threshold)
    return Verdict("ok", value, threshold)


def restarts_verdict(previous: int | None, current: int) -> Verdict:
    """A restart since the last sweep fails the check; N sweeps in a row of it is a crash loop worth an alert."""
    threshold = "no restart since the last sweep"
    if previous is None or current <= previous:
        return Verdict("ok", f"{current} in all", threshold)
    return Verdict("fail", f"+{current - previous} since the last sweep ({current} in all)", threshold)


def cert_verdict(days_left: float, tls_version: str, warn_days: float = 14) -> Verdict:
    value = f"{tls_version}, certificate expires in {days_left:.0f} days"
    if days_left < 0:
        return Verdict("fail", value, "a valid certificate")
    return Verdict("warn" if days_left < warn_days else "ok", value, f"certificate valid > {warn_days:g} days")


# DigitalOcean Monitoring: Prometheus-style {"status", "data": {"resultType": "matrix", "result": [...]}}.

def series(resp: dict[str, Any]) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """(labels, [(t, value)…]) per series, values as floats, sorted by time."""
    out = []
    for item in (resp.get("data") or {}).get("result") or []:
        points = sorted((float(t), float(v)) for t, v in item.get("values") or [])
        out.append((item.get("metric") or {}, points))
    return out


def latest_value(resp: dict[str, Any], **labels: str) -> float | None:
    """The newest value of the first series whose labels include `labels`."""
    for metric, points in series(resp):
        if points and all(metric.get(k) == v for k, v in labels.items()):
            return points[-1][1]
    return None


def do_cpu_segments(resp: dict[str, Any]) -> list[Segment]:
    """Busy % per interval from DigitalOcean's cumulative CPU seconds per mode (idle vs everything)."""
    by_time: dict[float, dict[str, float]] = {}
    for metric, points in series(resp):
        mode = metric.get("mode", "?")
        for t, v in points:
            modes = by_time.setdefault(t, {})
            modes[mode] = modes.get(mode, 0.0) + v
    times = sorted(t for t, modes in by_time.items() if "idle" in modes)
    segments = []
    for a, b in pairwise(times):
        total = sum(by_time[b].values()) - sum(by_time[a].values())
        idle = by_time[b]["idle"] - by_time[a]["idle"]
        if total > 0:
            segments.append((a, b, round(100.0 * (1 - idle / total), 2)))
    return segments


def do_memory_percent(total: dict[str, Any], available: dict[str, Any]) -> float | None:
    t, a = latest_value(total), latest_value(available)
    return round(100.0 * (1 - a / t), 2) if t and a is not None else None


def do_disk_percent(free: dict[str, Any], size: dict[str, Any]) -> dict[str, float]:
    """Used % per mount point from the newest free and size values."""
    sizes = {m.get("mountpoint", m.get("device", "?")): pts[-1][1] for m, pts in series(size) if pts}
    out = {}
    for metric, points in series(free):
        mount = metric.get("mountpoint", metric.get("device", "?"))
        if points and sizes.get(mount):
            out[mount] = round(100.0 * (1 - points[-1][1] / sizes[mount]), 2)
    return out
