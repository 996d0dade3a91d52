"""Logs bench: a backlog of 1,000,000 container log lines through the shipper (parse + COPY sink, cursor
committed with every batch) against a bare binary COPY of the same pre-built rows into the same table
(the limit) and a naive `executemany`. Writes bench/results/logs.json.

The lines come from an in-process stand-in for Docker's log stream (Odoo lines with tracebacks, nginx
access lines), so the figures are the shipper's own cost, not the Docker API's.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from odoo_stack_ops.logs import parse
from odoo_stack_ops.logs.sinks import COLUMNS, TYPES, PgSink

CHILD = r"""
import json, resource, sys, time
from bench.logs import FakeContainer
from odoo_stack_ops.logs.ship import ship
from odoo_stack_ops.logs.sinks import PgSink
info, rows = json.loads(sys.argv[1]), int(sys.argv[2])
sink = PgSink(info)
t = time.monotonic()
stats = ship(None, {"odoo-core": FakeContainer("odoo-core", rows // 2), "nginx-proxy": FakeContainer("nginx-proxy", rows // 2)},
             host="bench", sink=sink, batch_size=5000, max_seconds=3600, settle_s=0)
print(json.dumps({"seconds": time.monotonic() - t, "rows": stats.rows, "lines": stats.lines,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

START = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


def fake_lines(service: str, n: int) -> Any:
    """n Docker log lines (about one in 50 Odoo entries is a 4-line traceback), streamed."""
    for i in range(n):
        stamp = (START + timedelta(microseconds=i * 997)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        if service == "odoo-core":
            if i % 50 in (1, 2, 3):
                text = ["Traceback (most recent call last):", '  File "odoo/http.py", line 1, in dispatch',
                        "ValueError: boom"][i % 50 - 1]
            else:
                level = "ERROR" if i % 50 == 0 else "INFO"
                text = (f"2026-11-25 00:00:00,{i % 1000:03d} 7 {level} odoo_core odoo.http: "
                        f"request {i} GET /web/dataset/call_kw/res.partner/read partner={i % 977}")
        else:
            text = (f'10.0.{i % 250}.{i % 200} - - [25/Nov/2026:00:00:00 +0000] "GET /web/image/{i} HTTP/1.1" '
                    f'{200 if i % 40 else 502} {i % 9000} "https://erp.example.com/odoo" "Mozilla/5.0"')
        yield f"{stamp} {text}\n".encode()


class FakeContainer:
    """Enough of docker's Container for the shipper: a name and a `logs()` stream."""

    def __init__(self, service: str, n: int) -> None:
        self.service, self.n, self.name = service, n, f"bench-{service}-1"

    def logs(self, **kw: Any) -> Any:
        if not kw.get("stdout"):
            return iter(())
        def chunks() -> Any:
            buf = []
            for line in fake_lines(self.service, self.n):
                buf.append(line)
                if len(buf) == 512:
                    yield b"".join(buf)
                    buf = []
            if buf:
                yield b"".join(buf)
        return chunks()


def prebuilt_rows(rows: int) -> list[tuple[Any, ...]]:
    out = []
    for service in ("odoo-core", "nginx-proxy"):
        kind = parse.parser_kind(service)
        lines = parse.number_lines(x.decode().rstrip("\n") for x in fake_lines(service, rows // 2))
        out += [parse.to_row(e, host="bench", container=f"bench-{service}-1", stream="stdout", kind=kind)
                for e, _ in parse.group_entries(lines, multiline=kind == "odoo")]
    return out


def run(rows: int = 1_000_000, naive_rows: int = 50_000) -> dict[str, Any]:
    from odoo_stack_ops.sandbox.postgres import PgCluster

    pg = PgCluster().start()
    try:
        pg.createdb("logs")
        info = pg.conninfo("logs")
        sink = PgSink(info)
        sink.migrate()
        sink.close()
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(info), str(rows)], capture_output=True,
                             text=True, check=True)
        shipper = json.loads(out.stdout.strip().splitlines()[-1])
        built = prebuilt_rows(rows)
        with psycopg.connect(**info) as conn:
            n = conn.execute("SELECT count(*) FROM ops.logs").fetchone()[0]
            assert n == shipper["rows"] == len(built), (n, shipper["rows"], len(built))
            conn.execute("TRUNCATE ops.logs")
            conn.commit()
            t = time.monotonic()
            with conn.cursor().copy("COPY ops.logs (" + ", ".join(COLUMNS) + ") FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(list(TYPES))
                for row in built:
                    cp.write_row(row)
            conn.commit()
            copy_s = time.monotonic() - t
            conn.execute("TRUNCATE ops.logs")
            conn.commit()
            sample = [(*r[:8], psycopg.types.json.Jsonb(r[8])) for r in built[:naive_rows]]
            t = time.monotonic()
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO ops.logs (" + ", ".join(COLUMNS) + ") VALUES (%s, %s, %s, %s, %s, %s, "
                                "%s, %s, %s) ON CONFLICT (id) DO NOTHING", sample)
            conn.commit()
            naive_s = time.monotonic() - t
    finally:
        pg.stop()
    shipper_rps = shipper["rows"] / shipper["seconds"]
    copy_rps = len(built) / copy_s
    naive_rps = len(sample) / naive_s
    result = {"rows": shipper["rows"], "lines": shipper["lines"], "rows_per_s": round(shipper_rps),
              "lines_per_s": round(shipper["lines"] / shipper["seconds"]), "shipper_s": round(shipper["seconds"], 2),
              "copy_rows_per_s": round(copy_rps), "naive_rows_per_s": round(naive_rps),
              "naive_rows_measured": len(sample), "copy_ratio": round(shipper_rps / copy_rps, 3),
              "naive_ratio": round(shipper_rps / naive_rps, 2), "peak_rss_mb": round(shipper["rss_mb"], 1),
              "bench_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    for k, label in (("rows", "rows (entries from 1M lines)"), ("rows_per_s", "shipper rows/s (parse + COPY)"),
                     ("copy_rows_per_s", "bare binary COPY rows/s"), ("naive_rows_per_s", "naive executemany rows/s"),
                     ("copy_ratio", "copy_ratio, target >= 0.7"), ("naive_ratio", "naive_ratio, target >= 3"),
                     ("peak_rss_mb", "shipper peak RSS MB")):
        print(f"{label:<36}{result[k]:>12}")
    return result


if __name__ == "__main__":
    from pathlib import Path

    res = run()
    (Path(__file__).with_name("results") / "logs.json").write_text(json.dumps(res, indent=2) + "\n")
