"""The shipper: per container and stream, read Docker logs after the cursor, parse, write in bounded batches.

Nothing lost: the cursor moves only with the rows it covers (same transaction, or after them over REST).
Nothing doubled: reading restarts strictly after the cursor and ids are deterministic. A container
restart keeps its logs and timestamps go on; a recreated container (same name) starts after the cursor's
time. Rotation drops only lines older than what Docker still holds. The newest entry of a read is held
back until it has settled for `settle_s`, so a traceback being written is never split in two rows.

`python -m odoo_stack_ops.logs.ship --stack-file F` runs one pass without Prefect (cheap to start; used by
the crash test).
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from odoo_stack_ops.logs import parse
from odoo_stack_ops.logs.sinks import Cursor, CursorKey, PgSink, RestSink

STREAMS = ("stdout", "stderr")


@dataclass
class ShipStats:
    lines: int = 0
    rows: int = 0
    batches: int = 0
    held_back: int = 0
    finished: bool = True
    seconds: float = 0.0
    critical: list[dict[str, Any]] = field(default_factory=list)


class BackgroundSink:
    """Writes batches on a thread so parsing the next batch overlaps the database's work on this one.

    Batches (rows + their cursor) are committed in order, one transaction each, so a crash still loses or
    doubles nothing; at most `depth` batches wait in memory. A failed write surfaces on the next call."""

    def __init__(self, sink: Any, depth: int = 2) -> None:
        self.sink = sink
        self.q: queue.Queue[Any] = queue.Queue(depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="log-sink")
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write(*item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self.error = exc

    def cursors(self, host: str) -> Any:
        return self.sink.cursors(host)

    def write(self, rows: list[tuple[Any, ...]], host: str, cursors: Any) -> int:
        if self.error is not None:
            raise self.error
        self.q.put((rows, host, cursors))
        return len(rows)

    def close(self) -> None:
        """Wait for every queued batch; raise the first failure."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def read_lines(container: Any, stream: str, since: float | None) -> Iterator[str]:
    """Docker log lines with timestamps, streamed (never the whole log in memory)."""
    kw: dict[str, Any] = {"stdout": stream == "stdout", "stderr": stream == "stderr", "timestamps": True,
                          "stream": True, "follow": False}
    if since is not None:
        kw["since"] = since
    buf = b""
    for chunk in container.logs(**kw):
        buf += chunk
        if b"\n" in buf:
            head, _, buf = buf.rpartition(b"\n")
            yield from head.decode("utf-8", "replace").split("\n")
    if buf:
        yield buf.decode("utf-8", "replace")


def ship_stream(container: Any, name: str, service: str, stream: str, *, host: str, sink: Any,
                cursor: Cursor | None, stats: ShipStats, batch_size: int, deadline: float, settle_s: float,
                is_critical: Any) -> None:
    kind = parse.parser_kind(service)
    since = parse.parse_stamp(cursor[0]).timestamp() - 1 if cursor else None  # re-read the cursor's second whole
    lines = parse.number_lines(read_lines(container, stream, since), after=cursor)
    batch: list[tuple[Any, ...]] = []
    last: tuple[Cursor, datetime] | None = None
    now = datetime.now(UTC)
    for entry, is_last in parse.group_entries(lines, multiline=kind == "odoo"):
        if is_last and (now - parse.parse_stamp(entry.last.stamp)).total_seconds() < settle_s:
            stats.held_back += 1
            break
        row = parse.to_row(entry, host=host, container=name, stream=stream, kind=kind)
        batch.append(row)
        stats.lines += len(entry.lines)
        last = ((entry.last.stamp, entry.last.seq), row[1])
        if is_critical(row):
            stats.critical.append({"container": name, "logger": row[6], "level": row[5],
                                   "message": row[7].splitlines()[0][:300] if row[7] else ""})
        if len(batch) >= batch_size:
            stats.rows += sink.write(batch, host, {(name, stream): last})
            stats.batches += 1
            batch = []
            if time.monotonic() > deadline:
                stats.finished = False
                return
    if batch and last:
        stats.rows += sink.write(batch, host, {(name, stream): last})
        stats.batches += 1


def ship(client: Any, services: dict[str, Any], *, host: str, sink: Any, batch_size: int = 5000,
         max_seconds: float = 240, settle_s: float = 5.0, is_critical: Any = lambda row: False) -> ShipStats:
    """One pass over every container; stops early (resumable) when `max_seconds` is spent."""
    start = time.monotonic()
    deadline = start + max_seconds
    stats = ShipStats()
    cursors: dict[CursorKey, Cursor] = sink.cursors(host)
    writer = BackgroundSink(sink)
    try:
        for service, container in services.items():
            for stream in STREAMS:
                ship_stream(container, container.name, service, stream, host=host, sink=writer,
                            cursor=cursors.get((container.name, stream)), stats=stats, batch_size=batch_size,
                            deadline=deadline, settle_s=settle_s, is_critical=is_critical)
                if time.monotonic() > deadline:
                    stats.finished = False
                    break
            if not stats.finished:
                break
    finally:
        writer.close()
    stats.seconds = round(time.monotonic() - start, 3)
    return stats


def make_sink(cfg: Any) -> Any:
    """The configured sink: PostgreSQL (SUPABASE_DB_URL) or Supabase REST (SUPABASE_URL + service role key)."""
    sb = cfg.supabase
    if sb.sink == "rest":
        if not (sb.url and sb.service_role_key):
            raise ValueError("supabase.sink is 'rest' but SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY are missing")
        return RestSink(sb.url, sb.service_role_key.get_secret_value(), sb.schema_name, sb.table)
    if sb.db_dsn is None:
        raise ValueError("supabase.sink is 'postgres' but SUPABASE_DB_URL is missing")
    return PgSink(sb.db_dsn.get_secret_value(), sb.schema_name, sb.table)


def find_services(client: Any, services: list[str], project: str | None) -> dict[str, Any]:
    from odoo_stack_ops.executors.docker import find_container  # noqa: PLC0415

    return {s: find_container(client, s, project) for s in services}


def main(argv: list[str] | None = None) -> int:
    from odoo_stack_ops.config import load_config  # noqa: PLC0415
    from odoo_stack_ops.connect import Connections  # noqa: PLC0415

    p = argparse.ArgumentParser(description="one log-shipping pass without Prefect")
    p.add_argument("--stack-file")
    p.add_argument("--services", default="")
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=5000)
    a = p.parse_args(argv)
    cfg = load_config(a.stack_file)
    names = [s for s in a.services.split(",") if s] or list(cfg.containers)
    sink = make_sink(cfg)
    with Connections(cfg) as conns:
        stats = ship(conns.docker(), find_services(conns.docker(), names, cfg.docker.compose_project), host=cfg.name,
                     sink=sink, batch_size=a.batch, settle_s=a.settle)
    sink.close()
    sys.stdout.write(f"{stats.rows} rows, {stats.lines} lines, {stats.batches} batches\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
