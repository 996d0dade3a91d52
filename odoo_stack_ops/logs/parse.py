"""Container log lines → rows (pure): Odoo's format with tracebacks joined, nginx access/error, a fallback.

Each Docker log line arrives as `<RFC 3339 nano timestamp> <text>`. A row's id is derived from where the
entry sits in the stream (host, container, stream, time, rank among lines with the same time) and its text,
so reading an overlapping window again yields the same ids: the sink ignores them (nothing doubled).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ODOO = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) (\d+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) "
                  r"([\w.]+): ?(.*)$")
NGINX_ACCESS = re.compile(r'^(\S+) - (\S+) \[([^\]]+)\] "(\S+) (\S+)(?: (\S+))?" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"')
NGINX_ERROR = re.compile(r"^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(\w+)\] (\d+)#(\d+): (.*)$")
LEVEL_WORD = re.compile(r"\b(CRITICAL|FATAL|PANIC|ERROR|ERR|WARNING|WARN|INFO|DEBUG)\b", re.IGNORECASE)
NGINX_LEVELS = {"emerg": "CRITICAL", "alert": "CRITICAL", "crit": "CRITICAL", "error": "ERROR", "warn": "WARNING",
                "notice": "INFO", "info": "INFO", "debug": "DEBUG"}
WORD_LEVELS = {"FATAL": "CRITICAL", "PANIC": "CRITICAL", "ERR": "ERROR", "WARN": "WARNING"}


@dataclass(frozen=True)
class Line:
    """One Docker log line: timestamp (as sent, for ordering), its rank among lines with that timestamp."""

    stamp: str
    seq: int
    text: str


@dataclass
class Entry:
    lines: list[Line] = field(default_factory=list)

    @property
    def first(self) -> Line:
        return self.lines[0]

    @property
    def last(self) -> Line:
        return self.lines[-1]


def split_stamp(raw: str) -> tuple[str, str]:
    """'2026-11-25T01:02:03.123456789Z text' → (stamp, text)."""
    stamp, _, text = raw.partition(" ")
    return stamp, text


def parse_stamp(stamp: str) -> datetime:
    """RFC 3339 with up to nanoseconds (Docker) → aware datetime; Python 3.11 truncates past microseconds."""
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def number_lines(raw_lines: Iterable[str], after: tuple[str, int] | None = None) -> Iterator[Line]:
    """Give each line its rank among lines with the same timestamp; skip those at or before `after`."""
    prev, seq = None, 0
    for raw in raw_lines:
        stamp, text = split_stamp(raw)
        seq = seq + 1 if stamp == prev else 0
        prev = stamp
        if after is not None and (stamp, seq) <= after:
            continue
        yield Line(stamp, seq, text)


def group_entries(lines: Iterable[Line], multiline: bool) -> Iterator[tuple[Entry, bool]]:
    """Join continuation lines (tracebacks) to the Odoo-format line they follow; yields (entry, is_last):
    the last entry of a read may still grow, so the caller can hold it back until it settles."""
    current: Entry | None = None
    for line in lines:
        if multiline and current is not None and not ODOO.match(line.text):
            current.lines.append(line)
            continue
        if current is not None:
            yield current, False
        current = Entry([line])
    if current is not None:
        yield current, True


def parse_text(kind: str, text: str, stream: str) -> tuple[str | None, str | None, str, dict[str, Any]]:
    """(level, logger, message, attributes) for one entry's text."""
    first, _, rest = text.partition("\n")
    if kind == "odoo":
        m = ODOO.match(first)
        if m:
            msg = m.group(6) + ("\n" + rest if rest else "")
            return m.group(3), m.group(5), msg, {"pid": int(m.group(2)), "db": m.group(4), "odoo_time": m.group(1)}
    if kind == "nginx":
        m = NGINX_ACCESS.match(first)
        if m:
            status = int(m.group(7))
            level = "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"
            return level, "nginx.access", text, {
                "remote": m.group(1), "user": m.group(2), "method": m.group(4), "path": m.group(5),
                "protocol": m.group(6), "status": status, "bytes": 0 if m.group(8) == "-" else int(m.group(8)),
                "referer": m.group(9), "agent": m.group(10)}
        m = NGINX_ERROR.match(first)
        if m:
            return NGINX_LEVELS.get(m.group(2), "INFO"), "nginx.error", m.group(5), {"pid": int(m.group(3))}
    m = LEVEL_WORD.search(first)
    level = None
    if m:
        word = m.group(1).upper()
        level = WORD_LEVELS.get(word, word)
    return level, None, text, {}


def row_id(host: str, container: str, stream: str, line: Line, text: str) -> uuid.UUID:
    """128 bits of BLAKE2b over where the entry sits and what it says: stable across re-reads."""
    key = f"{host}\0{container}\0{stream}\0{line.stamp}\0{line.seq}\0{text}".encode("utf-8", "surrogateescape")
    return uuid.UUID(bytes=hashlib.blake2b(key, digest_size=16).digest())


def to_row(entry: Entry, *, host: str, container: str, stream: str, kind: str) -> tuple[Any, ...]:
    """(id, ts, host, container, stream, level, logger, message, attributes) for COPY."""
    text = "\n".join(line.text for line in entry.lines)
    level, logger, message, attrs = parse_text(kind, text, stream)
    if len(entry.lines) > 1:
        attrs["lines"] = len(entry.lines)
    return (row_id(host, container, stream, entry.first, text), parse_stamp(entry.first.stamp), host, container,
            stream, level, logger, message.replace("\x00", ""), attrs)


def parser_kind(service: str) -> str:
    return {"odoo-core": "odoo", "nginx-proxy": "nginx"}.get(service, "generic")
