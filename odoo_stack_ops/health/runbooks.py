"""The seed's Troubleshooting runbooks as pure pieces: what to look for in the evidence, and the evidence
report. The diagnose flow gathers the raw material (logs, `df -h`, `free -m`, database checks)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from odoo_stack_ops.health import facts

# Odoo's own wording: "Some modules are not loaded, some dependencies or manifest may be missing: ['a', 'b']",
# "module a: Unmet dependencies: b, c", "module a: not installable, skipped".
_LIST = re.compile(r"missing:\s*\[([^\]]*)\]", re.IGNORECASE)
_UNMET = re.compile(r"module ([\w.]+): Unmet dependencies: ([\w.,\s]+)", re.IGNORECASE)
_NOT_INSTALLABLE = re.compile(r"module ([\w.]+): not installable", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][\w.]*")


def missing_lines(log: str) -> list[str]:
    """The lines `grep -i missing` finds (and Odoo's 'Unmet dependencies' / 'not installable' lines)."""
    keys = ("missing", "unmet dependencies", "not installable")
    return [ln for ln in log.splitlines() if any(k in ln.lower() for k in keys)]


def missing_modules(lines: list[str]) -> list[str]:
    """Module names those lines blame, in first-seen order."""
    names: list[str] = []
    for line in lines:
        found: list[str] = []
        if m := _LIST.search(line):
            found += _NAME.findall(m.group(1))
        if m := _UNMET.search(line):
            found += [m.group(1), *_NAME.findall(m.group(2))]
        if m := _NOT_INSTALLABLE.search(line):
            found.append(m.group(1))
        names += [n for n in found if n not in names]
    return names


def resource_findings(df_h: str, free: str, disk_percent: float, memory_percent: float) -> list[str]:
    """What in `df -h` / `free -m` could stop a container from starting (full disk, no memory left)."""
    out = []
    for line in df_h.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[4].endswith("%") and parts[4][:-1].isdigit() and int(parts[4][:-1]) > disk_percent:
            out.append(f"disk {' '.join(parts[5:])} is {parts[4]} full (threshold {disk_percent:g} %)")
    mem = facts.free_m(free).get("Mem")
    if mem and mem.get("total"):
        used = 100.0 * (1 - mem.get("available", mem.get("free", 0)) / mem["total"])
        if used > memory_percent:
            out.append(f"memory {used:.0f} % used, {mem.get('available', 0)} MiB available "
                       f"(threshold {memory_percent:g} %)")
    return out


@dataclass
class Section:
    title: str
    verdict: str  # "ok", "problem" or "unknown"
    summary: str
    details: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # the seed's command that addresses the finding ("start", "restart"), if any


def container_action(running: bool, health: str | None) -> str | None:
    """What the runbook's operator would run next: `docker compose start` for a stopped container (`up -d`
    also recreates it on a newer pulled image), `restart` for one that runs unhealthy; None when neither helps."""
    if not running:
        return "start"
    if health == "unhealthy":
        return "restart"
    return None


def evidence_markdown(stack: str, target: str, when: str, sections: list[Section]) -> str:
    """One evidence report: findings first, raw evidence after, each block fenced."""
    icon = {"ok": "✅", "problem": "❌", "unknown": "⚠️"}
    lines = [f"# Diagnosis of {target} on {stack}", "", f"Collected {when}.", "", "| runbook | verdict | finding |",
             "|---|---|---|"]
    for s in sections:
        lines.append(f"| {s.title} | {icon.get(s.verdict, '')} {s.verdict} | {s.summary.replace('|', '/')} |")
    for s in sections:
        lines += ["", f"## {s.title}", "", s.summary]
        for name, text in s.details.items():
            fence = "````" if "```" in text else "```"
            lines += ["", f"### {name}", "", fence, text.rstrip()[-20000:] or "(empty)", fence]
    return "\n".join(lines) + "\n"
