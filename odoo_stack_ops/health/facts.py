"""Facts = a command's output + a pure parser: /proc/stat, /proc/meminfo, /proc/net/dev, `df -P`, `free -m`,
and the Docker Engine API's inspect / stats JSON. No I/O here; tests feed them recorded outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Interfaces that carry no droplet traffic of their own (container bridges would count it twice).
VIRTUAL_INTERFACES = ("lo", "veth", "docker", "br-", "podman", "cni", "virbr", "ifb", "tun", "tap", "flannel",
                      "cali", "vxlan", "dummy")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative jiffies since boot: busy (everything but idle and iowait) and total."""

    busy: int
    total: int


def cpu_times(proc_stat: str) -> CpuTimes:
    """The aggregate `cpu` line of /proc/stat. Raises ValueError when it is missing."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])  # guest and guest_nice are already counted in user and nice
            return CpuTimes(total - idle, total)
    raise ValueError("no aggregate cpu line in /proc/stat")


def cpu_percent(prev: CpuTimes, cur: CpuTimes) -> float | None:
    """Busy share between two readings; None when the counters went backwards (a reboot)."""
    busy, total = cur.busy - prev.busy, cur.total - prev.total
    if total <= 0 or busy < 0:
        return None
    return round(100.0 * busy / total, 2)


def meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {field: kB}."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.split():
            fields[name.strip()] = int(rest.split()[0])
    return fields


def memory_used_percent(info: dict[str, int]) -> float:
    """Used memory as the kernel sees it: 100 * (1 - MemAvailable / MemTotal) (page cache is not 'used')."""
    return round(100.0 * (1 - info["MemAvailable"] / info["MemTotal"]), 2)


def net_dev(text: str) -> dict[str, tuple[int, int]]:
    """/proc/net/dev as {interface: (received bytes, transmitted bytes)}."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        cols = rest.split()
        if not sep or len(cols) < 9 or not cols[0].isdigit():
            continue
        out[name.strip()] = (int(cols[0]), int(cols[8]))
    return out


def physical_bytes(counters: dict[str, tuple[int, int]], skip: tuple[str, ...] = VIRTUAL_INTERFACES) -> tuple[int, int]:
    """(rx, tx) summed over the interfaces that reach outside the host."""
    rx = tx = 0
    for name, (r, t) in counters.items():
        if not name.startswith(skip):
            rx, tx = rx + r, tx + t
    return rx, tx


@dataclass(frozen=True)
class DiskUsage:
    filesystem: str
    size_kb: int
    used_kb: int
    available_kb: int
    percent: float
    mount: str


def df_p(text: str) -> list[DiskUsage]:
    """`df -P` rows (POSIX format: one line per filesystem; mount points may contain spaces)."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or not parts[4].endswith("%") or not parts[1].isdigit():
            continue
        rows.append(DiskUsage(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4][:-1]),
                              " ".join(parts[5:])))
    return rows


def disk_for(path: str, rows: list[DiskUsage]) -> DiskUsage | None:
    """The filesystem holding the absolute `path`: the row whose mount point is its longest prefix."""
    if not path.startswith("/"):
        return None
    best: DiskUsage | None = None
    for row in rows:
        mount = row.mount.rstrip("/")
        inside = path == row.mount or path.startswith(mount + "/") or row.mount == "/"
        if inside and (best is None or len(row.mount) > len(best.mount)):
            best = row
    return best


def free_m(text: str) -> dict[str, dict[str, int]]:
    """`free -m` (procps) as {"Mem": {"total": …, "used": …, "available": …}, "Swap": {…}}, in MiB."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}
    header = lines[0].split()
    out: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        values = rest.split()
        if values and all(v.isdigit() for v in values):
            out[label.strip()] = {h: int(v) for h, v in zip(header, values, strict=False)}
    return out


@dataclass(frozen=True)
class ContainerFacts:
    """What `docker inspect` says about one container, reduced to what a health check needs."""

    name: str
    service: str | None
    status: str
    running: bool
    has_healthcheck: bool
    health: str | None
    restarts: int
    exit_code: int | None
    oom_killed: bool
    error: str
    started_at: str
    finished_at: str


def docker_inspect(attrs: dict[str, Any]) -> ContainerFacts:
    """Parse a container's inspect JSON (Docker or podman's compatible API)."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    has_hc = bool(test) and test != ["NONE"]
    health = ((state.get("Health") or {}).get("Status") or None) if has_hc else None
    finished = state.get("FinishedAt") or ""
    return ContainerFacts(
        name=(attrs.get("Name") or "").lstrip("/"),
        service=(config.get("Labels") or {}).get("com.docker.compose.service"),
        status=state.get("Status") or "unknown",
        running=bool(state.get("Running")),
        has_healthcheck=has_hc,
        health=health,
        restarts=int(attrs.get("RestartCount") or 0),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        started_at=state.get("StartedAt") or "",
        finished_at="" if finished.startswith("0001-") else finished,
    )


@dataclass(frozen=True)
class ContainerStats:
    """One `GET /containers/{id}/stats?stream=false` reading: cumulative CPU counters, memory, network."""

    cpu_ns: int
    system_ns: int
    online_cpus: int
    pre_cpu_ns: int
    pre_system_ns: int
    memory_used: int
    memory_limit: int
    rx_bytes: int
    tx_bytes: int


def docker_stats(stats: dict[str, Any]) -> ContainerStats:
    """Parse a stats JSON. Memory used leaves out the page cache, as `docker stats` does (cgroup v1 and v2)."""
    cpu = stats.get("cpu_stats") or {}
    pre = stats.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 1
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    used = int(mem.get("usage") or 0)
    if cache < used:
        used -= cache
    rx = tx = 0
    for net in (stats.get("networks") or {}).values():
        rx += int(net.get("rx_bytes") or 0)
        tx += int(net.get("tx_bytes") or 0)
    return ContainerStats(
        cpu_ns=int(usage.get("total_usage") or 0), system_ns=int(cpu.get("system_cpu_usage") or 0),
        online_cpus=int(online), pre_cpu_ns=int((pre.get("cpu_usage") or {}).get("total_usage") or 0),
        pre_system_ns=int(pre.get("system_cpu_usage") or 0), memory_used=used,
        memory_limit=int(mem.get("limit") or 0), rx_bytes=rx, tx_bytes=tx)


def container_cpu_percent(prev_cpu_ns: int, prev_system_ns: int, cur: ContainerStats) -> float | None:
    """The container's share of the whole host (0-100) between two readings; None without a usable delta.

    `docker stats` shows delta_cpu / delta_system * online_cpus (up to 400 % on 4 vCPUs); system_cpu_usage
    already sums every CPU, so delta_cpu / delta_system alone is the share comparable with the host threshold.
    """
    d_cpu, d_sys = cur.cpu_ns - prev_cpu_ns, cur.system_ns - prev_system_ns
    if prev_system_ns <= 0 or d_sys <= 0 or d_cpu < 0:
        return None
    return round(100.0 * d_cpu / d_sys, 2)


def memory_percent_of_limit(stats: ContainerStats) -> float | None:
    return round(100.0 * stats.memory_used / stats.memory_limit, 2) if stats.memory_limit > 0 else None
