"""The shipper: per container and stream, read Docker's log after the cursor, parse, write bounded batches.

Nothing lost: a batch's cursor is the place of its last line and is committed with (direct sink) or right
after (REST sink) its rows; a run resumes strictly after the committed cursor. Nothing doubled: rows carry
deterministic ids that the sinks ignore when seen again. Memory is bounded by `batch_size` whatever the
backlog (the log is streamed from the Engine API, one batch of rows is held for a possible replay), and a
run stops after `max_seconds`, leaving the rest for the next run. The last Odoo entry of a read is held back while it may still grow (younger than
`settle_s`, or its last line not yet ended by a newline), so a traceback being written is not cut in two.

`python -m odoo_stack_ops.logs.ship --stack-file F` runs one pass without Prefect (cheap to start; the
crash test kills it at random points).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from odoo_stack_ops.logs import parse
from odoo_stack_ops.logs.alerts import CriticalCollector, CriticalMatcher
from odoo_stack_ops.logs.parse import Cursor, Row
from odoo_stack_ops.logs.sink_pg import CursorKey

STREAMS = ("stdout", "stderr")
log = logging.getLogger(__name__)


@dataclass
class ShipStats:
    rows: int = 0
    lines: int = 0
    batches: int = 0
    held_back: int = 0
    finished: bool = True
    seconds: float = 0.0
    per_container: dict[str, int] = field(default_factory=dict)


class LogReader:
    """Complete `<stamp> <text>` lines of one container stream, streamed from the Engine API (never the whole
    log in memory). Each frame of the stream is one log record. A record without a trailing newline is a
    partial line (conmon writes one whenever its read of the pipe ends mid-line; Docker past 16 KiB): the
    next record continues it, so its own stamp is dropped and the line keeps the first stamp. A last line
    still unfinished is not yielded (`incomplete` is set): it is read again, whole, next time. Bytes are
    decoded per complete line, so a UTF-8 sequence split across records stays intact."""

    def __init__(self, container: Any, stream: str, since: int | None) -> None:
        kw: dict[str, Any] = {"stdout": stream == "stdout", "stderr": stream == "stderr", "timestamps": True,
                              "stream": True, "follow": False}
        if since is not None:
            kw["since"] = max(since, 1)
        self.chunks = log_frames(container, kw)
        self.incomplete = False

    def __iter__(self) -> Iterator[str]:
        buf = b""
        for frame in self.chunks:
            if buf:
                stamp, space, rest = frame.partition(b" ")
                data = buf + (rest if space and _is_stamp(stamp) else frame)
                buf = b""
            else:
                data = frame
            if data[-1:] == b"\n":
                yield from data[:-1].decode("utf-8", "replace").split("\n")
            else:
                head, newline, buf = data.rpartition(b"\n")
                if newline:
                    yield from head.decode("utf-8", "replace").split("\n")
        self.incomplete = bool(buf)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chunks.close()


READ_BYTES = 1 << 18


def log_frames(container: Any, kw: dict[str, Any]) -> Any:
    """The log's records (frame payloads) from the Engine API. The docker SDK reads each frame through
    urllib3 as its own HTTP chunk (about 9 µs a line, most of the shipper's time); a container without a
    TTY has a multiplexed stream, so it is read here in large blocks and split by `demux` (under 1 µs).
    Anything else (a TTY, an object that is only a `logs()` seam) goes through `container.logs`."""
    api = getattr(getattr(container, "client", None), "api", None)
    if api is None or container.attrs.get("Config", {}).get("Tty"):
        return container.logs(**kw)
    params = {"stdout": int(kw["stdout"]), "stderr": int(kw["stderr"]), "timestamps": 1, "follow": 0, "tail": "all"}
    if "since" in kw:
        params["since"] = kw["since"]

    def request() -> Any:
        # the SDK's own request and error mapping (as container.logs uses them), only the body read differently
        resp = api._get(api._url("/containers/{0}/logs", container.id), params=params, stream=True)
        try:
            api._raise_for_status(resp)
        except BaseException:
            resp.close()
            raise
        return resp

    return _Frames(request)


class _Frames:
    """Frame payloads of a raw logs response; closable like the SDK's stream. A thread sends the request and
    reads ahead (at most PREFETCH blocks, 8 MiB), so the engine keeps serving while this process parses and
    the database copies: the engine's own work per line is about as much as ours, and in turn they would add
    up. The request is sent from the thread too: the engine answers a stream only after scanning the log up
    to its first line of that stream (a whole log for an empty stderr), and the shipper opens the next stream
    while it ships the current one. Whatever fails in the thread (the request refused, the connection
    dropped) is raised to the consumer where the blocks end, never taken for the end of the log."""

    PREFETCH = 32

    def __init__(self, request: Callable[[], Any]) -> None:
        self.request = request
        self.resp: Any = None
        self.lock = threading.Lock()
        self.blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(self.PREFETCH)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, name="log-prefetch", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        item: bytes | BaseException | None = None
        try:
            resp = self.request()
            with self.lock:
                self.resp = resp
                if self.stopped.is_set():
                    resp.close()
                    return
            for block in iter(lambda: resp.raw.read(READ_BYTES), b""):
                if not self._put(block):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            item = exc
        self._put(item)

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self.stopped.is_set():
            try:
                self.blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _blocks(self) -> Iterator[bytes]:
        while (item := self.blocks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def __iter__(self) -> Iterator[bytes]:
        for frames in demux(self._blocks()):
            yield from frames

    def close(self) -> None:
        self.stopped.set()
        with self.lock:
            if self.resp is None:
                return  # still waiting for the engine's answer: the thread closes it when it comes
        self.thread.join(timeout=5)
        self.resp.close()


def demux(blocks: Iterator[bytes]) -> Iterator[list[bytes]]:
    """Docker's multiplexed stream (per frame: stream byte, 3 zero bytes, big-endian length, payload) read in
    arbitrary blocks → the payloads, one list per block; a frame cut by a block's end waits for the next."""
    buf = b""
    for block in blocks:
        buf = buf + block if buf else block
        out, pos, end = [], 0, len(buf)
        while pos + 8 <= end:
            stop = pos + 8 + int.from_bytes(buf[pos + 4:pos + 8])
            if stop > end:
                break
            out.append(buf[pos + 8:stop])
            pos = stop
        buf = buf[pos:]
        if out:
            yield out
    if buf:
        raise ValueError(f"the log stream ended inside a frame ({len(buf)} bytes left)")


def _is_stamp(token: bytes) -> bool:
    """Cheap test for an RFC 3339 log stamp such as 2026-11-25T06:22:04Z or …04.123456789Z."""
    return 20 <= len(token) <= 35 and token[4:5] == b"-" and token[10:11] == b"T" and token[:4].isdigit()


class Batch:
    """Up to `size` rows pulled from one stream's rows while the sink consumes them: the direct sink's COPY
    streams as the parser goes, so parsing overlaps the database's work (one thread; a writer thread was
    slower, the GIL serialising the two). Remembers the place of its last row for the cursor and hands
    critical rows to the collector."""

    def __init__(self, rows: Iterator[tuple[Row, str, int, str]], size: int, source: parse.Source,
                 critical: Callable[[Row], None] | None, hot_levels: frozenset[str] | None = None) -> None:
        self.rows, self.size, self.source, self.critical = rows, size, source, critical
        self.hot_levels = hot_levels  # when set, only rows of these levels can be critical (no patterns)
        self.count = self.lines = 0
        self.place: tuple[str, int, str] | None = None
        self.exhausted = False

    def __iter__(self) -> Iterator[Row]:
        count_lines = self.source.kind == "odoo"  # an Odoo entry's message holds its continuation lines
        critical, hot = self.critical, self.hot_levels
        for row, stamp, seq, line in self.rows:
            self.count += 1
            self.place = (stamp, seq, line)
            if count_lines:
                self.lines += row[7].count("\n")
            if critical is not None and (hot is None or row[5] in hot):
                critical(row)
            yield row
            if self.count >= self.size:
                return
        self.exhausted = True

    def cursors(self) -> dict[CursorKey, Cursor]:
        if self.place is None:
            raise RuntimeError("an empty batch has no cursor")
        stamp, seq, line = self.place
        return {(self.source.container, self.source.stream):
                Cursor(self.source.container_id, parse.stamp_ns(stamp), seq, parse.line_hash(line))}


@dataclass
class StreamJob:
    """One container stream to ship, its reader already started (the engine may still be scanning for it)."""

    source: parse.Source
    cursor: Cursor | None
    reader: LogReader
    cutoff: int  # entries stamped after this (ns) may still grow: the last one is held back


def open_stream(container: Any, service: str, stream: str, *, host: str, cursor: Cursor | None,
                settle_s: float) -> StreamJob:
    source = parse.Source(host, container.name, container.id, stream, parse.parser_kind(service))
    if cursor is not None and cursor.container_id != container.id:
        log.info("%s was recreated (new container id): reading its %s from the start", container.name, stream)
        cursor = None
    cutoff = time.time_ns() - int(settle_s * 1e9)  # before the read starts: nothing later is taken as settled
    return StreamJob(source, cursor, LogReader(container, stream, parse.since_for(cursor)), cutoff)


def ship_stream(job: StreamJob, *, host: str, sink: Any, stats: ShipStats, batch_size: int, deadline: float,
                critical: Callable[[Row], None] | None = None, hot_levels: frozenset[str] | None = None,
                on_commit: Callable[[], None] | None = None) -> None:
    """One container stream after its cursor, batch by batch; returns early (resumable) past the deadline."""
    source, reader = job.source, job.reader

    def hold_last(stamp: str) -> bool:
        held = reader.incomplete or parse.stamp_ns(stamp) > job.cutoff
        stats.held_back += held
        return held

    rows = parse.iter_rows(source, iter(reader), job.cursor, hold_last)
    try:
        while True:
            batch = Batch(rows, batch_size, source, critical, hot_levels)
            written = sink.write(batch, host, batch.cursors)
            if written:
                stats.rows += written
                stats.lines += written + batch.lines
                stats.batches += 1
                stats.per_container[source.container] = stats.per_container.get(source.container, 0) + written
                if on_commit is not None:
                    on_commit()
            if batch.exhausted or not written:
                return
            if time.monotonic() > deadline:
                stats.finished = False
                return
    finally:
        rows.close()
        reader.close()


def ship(containers: Mapping[str, Any], *, host: str, sink: Any, batch_size: int = 20_000, max_seconds: float = 240,
         settle_s: float = 5.0, matcher: CriticalMatcher | None = None, collector: CriticalCollector | None = None,
         on_commit: Callable[[], None] | None = None) -> ShipStats:
    """One pass over every container (service → docker container) and both streams; stops early
    (resumable) when `max_seconds` is spent. Critical rows (per `matcher`) go to `collector`; `on_commit` is
    called after each batch is committed (its cursor with it). The next
    stream's read is started while the current one ships (one ahead: two streams' read-ahead at most)."""
    start = time.monotonic()
    deadline = start + max_seconds
    stats = ShipStats()
    cursors: dict[CursorKey, Cursor] = sink.cursors(host)
    critical, hot_levels = None, None
    if matcher is not None and collector is not None:
        hot_levels = None if matcher.patterns else matcher.levels  # levels alone: most rows skip the call
        add = collector.add

        def critical(row: Row) -> None:
            if matcher(row):
                add(row)

    todo = [(service, container, stream) for service, container in containers.items() for stream in STREAMS]

    def start_next() -> StreamJob | None:
        if not todo:
            return None
        service, container, stream = todo.pop(0)
        return open_stream(container, service, stream, host=host, cursor=cursors.get((container.name, stream)),
                           settle_s=settle_s)

    upcoming = start_next()
    try:
        while upcoming is not None and stats.finished:
            job, upcoming = upcoming, start_next()
            ship_stream(job, host=host, sink=sink, stats=stats, batch_size=batch_size, deadline=deadline,
                        critical=critical, hot_levels=hot_levels, on_commit=on_commit)
    finally:
        if upcoming is not None:
            upcoming.reader.close()
    stats.seconds = round(time.monotonic() - start, 3)
    return stats


def make_sink(cfg: Any) -> Any:
    """The configured sink: PostgreSQL (SUPABASE_DB_URL) or Supabase REST (SUPABASE_URL + service role key)."""
    from odoo_stack_ops.errors import ConfigError  # noqa: PLC0415
    from odoo_stack_ops.logs.sink_pg import PgSink  # noqa: PLC0415
    from odoo_stack_ops.logs.sink_rest import RestSink  # noqa: PLC0415

    sb = cfg.supabase
    if sb.sink == "rest":
        if not (sb.url and sb.service_role_key):
            raise ConfigError("supabase.sink is 'rest' but SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY are missing")
        return RestSink(sb.url, sb.service_role_key.get_secret_value(), sb.schema_name, sb.table)
    if sb.db_dsn is None:
        raise ConfigError("supabase.sink is 'postgres' but SUPABASE_DB_URL is missing")
    return PgSink(sb.db_dsn.get_secret_value(), sb.schema_name, sb.table)


def find_services(client: Any, services: list[str], project: str | None) -> dict[str, Any]:
    from odoo_stack_ops.executors.docker import find_container  # noqa: PLC0415

    return {s: find_container(client, s, project) for s in services}


def main(argv: list[str] | None = None) -> int:
    from odoo_stack_ops.config import load_config  # noqa: PLC0415
    from odoo_stack_ops.connect import Connections  # noqa: PLC0415

    p = argparse.ArgumentParser(description="one log-shipping pass without Prefect")
    p.add_argument("--stack-file")
    p.add_argument("--services", default="", help="comma-separated compose services (default: all configured)")
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--max-seconds", type=float, default=240)
    p.add_argument("--loop", action="store_true", help="pass after pass until killed (the crash test)")
    a = p.parse_args(argv)
    cfg = load_config(a.stack_file)
    names = [s for s in a.services.split(",") if s] or list(cfg.containers)
    sink = make_sink(cfg)
    try:
        sink.migrate()
        with Connections(cfg) as conns:
            found = find_services(conns.docker(), names, cfg.docker.compose_project)
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            while True:
                stats = ship(found, host=cfg.name, sink=sink, batch_size=a.batch, max_seconds=a.max_seconds,
                             settle_s=a.settle)
                if not a.loop:
                    break
                time.sleep(0.02)
    finally:
        sink.close()
    sys.stdout.write(f"{stats.rows} rows in {stats.batches} batches, {stats.seconds} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
