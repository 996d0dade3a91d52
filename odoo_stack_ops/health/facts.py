"""Facts = command output + pure parser: /proc/stat, /proc/meminfo, /proc/net/dev, `df -P` (tested on recordings)."""

from __future__ import annotations


def cpu_jiffies(proc_stat: str) -> tuple[int, int]:
    """(busy, total) jiffies from the aggregate `cpu` line of /proc/stat."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total = sum(values[:8])  # guest time is already in user/nice
            return total - idle, total
    raise ValueError("no aggregate cpu line in /proc/stat")


def cpu_percent(prev: tuple[int, int], cur: tuple[int, int]) -> float:
    busy, total = cur[0] - prev[0], cur[1] - prev[1]
    return round(100.0 * busy / total, 2) if total > 0 else 0.0


def memory_percent(meminfo: str) -> float:
    """Used memory as the kernel counts it: 100 * (1 - MemAvailable / MemTotal)."""
    fields = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip():
            fields[name] = int(rest.split()[0])
    return round(100.0 * (1 - fields["MemAvailable"] / fields["MemTotal"]), 2)


def net_bytes(net_dev: str, skip: tuple[str, ...] = ("lo",)) -> int:
    """Total received + transmitted bytes of every interface but loopback."""
    total = 0
    for line in net_dev.splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() in skip or not rest.strip():
            continue
        cols = rest.split()
        total += int(cols[0]) + int(cols[8])
    return total


def net_mbps(prev_bytes: int, cur_bytes: int, seconds: float) -> float:
    if seconds <= 0 or cur_bytes < prev_bytes:  # counter reset (reboot): no rate this time
        return 0.0
    return round((cur_bytes - prev_bytes) * 8 / seconds / 1e6, 3)


def disk_percent(df_p: str) -> dict[str, float]:
    """Use% per mount point from `df -P` (mount points may contain spaces)."""
    out = {}
    for line in df_p.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or not parts[4].endswith("%"):
            continue
        out[" ".join(parts[5:])] = float(parts[4].rstrip("%"))
    return out
