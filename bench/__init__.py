"""Benchmarks: `python -m bench [area ...]`."""

from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
