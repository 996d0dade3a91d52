"""Logs bench: a backlog of 1,000,000 container log lines through the shipper end to end (read → parse →
binary COPY with the cursor committed every 20,000 rows, critical lines collected) against

- the limit: a bare binary COPY of the same pre-built rows into the same (emptied) table, one transaction;
- naive inserts: one INSERT … ON CONFLICT DO NOTHING per row, the way `executemany` runs without libpq's
  pipeline mode (psycopg 2, or psycopg 3 on an old libpq), on a subset into the empty table (the cheapest
  moment for it) and extrapolated as rows/s;
- psycopg 3's own `executemany` (pipelined, auto-prepared) on the same subset, reported beside it.

The log comes from an in-process stand-in for the Engine API's log stream (one frame per line, read from a
pre-generated file so generating it costs the shipper nothing): a realistic Odoo mix (werkzeug request
lines, module/cron INFO, warnings, errors with 8-line tracebacks) and nginx access lines with some errors.
The shipper runs in a child process so its peak RSS is its own. `python -m bench.logs` writes
bench/results/logs.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from odoo_stack_ops.logs import parse
from odoo_stack_ops.logs.parse import COLUMNS
from odoo_stack_ops.logs.sink_pg import PgSink, copy_rows, register_row_dumpers

RESULTS = Path(__file__).parent / "results"
START = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
BATCH = 20_000  # the flow's default: fewer commits and COPY start-ups, ~10 MB held for a replay

CHILD = r"""
import json, sys, time
from bench import peak_rss_mb
from bench.logs import FakeContainer
from odoo_stack_ops.logs.alerts import CriticalCollector, CriticalMatcher
from odoo_stack_ops.logs.ship import ship
from odoo_stack_ops.logs.sink_pg import PgSink
info, files, batch = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
sink = PgSink(info)
collector = CriticalCollector()
t = time.monotonic()
stats = ship({s: FakeContainer(s, f) for s, f in files.items()}, host="bench", sink=sink, batch_size=batch,
             max_seconds=3600, settle_s=0, matcher=CriticalMatcher(), collector=collector)
print(json.dumps({"seconds": time.monotonic() - t, "cpu_s": time.process_time(), "rows": stats.rows, "lines": stats.lines,
                  "batches": stats.batches, "critical": sum(g.count for g in collector.groups.values()),
                  "rss_mb": peak_rss_mb()}))
"""

PATHS = ["/web/dataset/call_kw/res.partner/web_search_read", "/web/action/load", "/mail/data", "/web/webclient/load_menus",
         "/bus/websocket_worker_bundle", "/web/image/product.template/42/image_128", "/odoo/sales", "/web/assets/1/web.assets_web.min.js"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
          "n8n", "curl/8.5.0"]
TRACEBACK = ["Traceback (most recent call last):",
             '  File "/usr/lib/python3/dist-packages/odoo/http.py", line 2375, in __call__',
             "    response = request._serve_db()",
             '  File "/usr/lib/python3/dist-packages/odoo/http.py", line 1938, in _serve_db',
             "    return service_model.retrying(self._serve_ir_http, self.env)",
             '  File "/mnt/extra-addons/ipai/ipai_finance_ppm/models/ppm.py", line 88, in _compute_budget',
             "    raise UserError(_('Budget line %s has no analytic account') % line.name)",
             "odoo.exceptions.UserError: Budget line BL/2026/0042 has no analytic account"]


def _stamp(i: int) -> str:
    """Docker's RFC 3339 nano stamp (trailing zeros trimmed, like Go's RFC3339Nano)."""
    t = START + timedelta(microseconds=i * 997)
    frac = f"{t.microsecond:06d}{i % 1000:03d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def odoo_text(i: int) -> str:
    t = (START + timedelta(microseconds=i * 997)).strftime("%Y-%m-%d %H:%M:%S")
    head = f"{t},{i % 1000:03d} {7 + i % 4} "
    r = i % 100
    if r < 70:
        return (f'{head}INFO odoo_core werkzeug: 10.20.{i % 250}.{i % 200} - - [25/Nov/2026 00:00:00] '
                f'"POST {PATHS[i % len(PATHS)]} HTTP/1.0" 200 - {i % 40} {i % 7}.{i % 997:03d} 0.{i % 89:03d}')
    if r < 85:
        return f"{head}INFO odoo_core odoo.addons.base.models.ir_cron: Job 'Mail: Email Queue Manager' ({i % 30}) done in {i % 9}.{i % 1000:03d}s"
    if r < 95:
        return f"{head}WARNING odoo_core odoo.models: res.partner.read() with unknown fields: x_legacy_{i % 13}"
    return f"{head}ERROR odoo_core odoo.http: Exception during request handling (uid={i % 17}, db=odoo_core)"


def nginx_text(i: int) -> str:
    if i % 500 == 0:
        return (f"2026/11/25 00:00:00 [error] 29#29: *{i} upstream timed out (110: Connection timed out) while reading "
                f'response header from upstream, client: 10.0.0.{i % 250}, server: erp.example.com, request: "POST '
                f'/web/dataset/call_kw HTTP/1.1", upstream: "http://172.20.0.3:8069/web/dataset/call_kw"')
    status = 200 if i % 40 else (502 if i % 80 else 404)
    return (f'10.0.{i % 250}.{i % 200} - - [25/Nov/2026:00:00:{i % 60:02d} +0000] "GET {PATHS[i % len(PATHS)]}?v={i} '
            f'HTTP/1.1" {status} {i % 90000} "https://erp.example.com/odoo/action-{i % 300}" "{AGENTS[i % len(AGENTS)]}"')


def write_log(path: Path, service: str, lines: int) -> None:
    """A container log as the Engine API sends it: `<stamp> <text>` per line (Odoo errors carry tracebacks)."""
    with path.open("w") as fh:
        i = n = 0
        while n < lines:
            if service == "odoo-core":
                text = odoo_text(i)
                fh.write(f"{_stamp(n)} {text}\n")
                n += 1
                if " ERROR " in text:
                    for tb in TRACEBACK[: lines - n]:
                        fh.write(f"{_stamp(n)} {tb}\n")
                        n += 1
            else:
                fh.write(f"{_stamp(n)} {nginx_text(i)}\n")
                n += 1
            i += 1


class FakeContainer:
    """Enough of docker's Container for the shipper: name, id and a `logs()` stream of one frame per line."""

    def __init__(self, service: str, path: str) -> None:
        self.service, self.path, self.name, self.id = service, path, f"bench-{service}-1", f"bench{service}id"

    def logs(self, **kw: Any) -> Any:
        if not kw.get("stdout"):
            return iter(())
        return open(self.path, "rb")


def prebuilt_rows(files: dict[str, str]) -> list[parse.Row]:
    out: list[parse.Row] = []
    for service, path in files.items():
        c = FakeContainer(service, path)
        src = parse.Source("bench", c.name, c.id, "stdout", parse.parser_kind(service))
        with open(path) as fh:
            out += [r for r, *_ in parse.iter_rows(src, (line.rstrip("\n") for line in fh))]
    return out


def _timed_insert(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], pipelined: bool) -> float:
    q = (f"INSERT INTO ops.logs ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
         "ON CONFLICT (id) DO NOTHING")
    conn.execute("TRUNCATE ops.logs")
    conn.commit()
    t = time.monotonic()
    with conn.cursor() as cur:
        if pipelined:
            cur.executemany(q, rows)
        else:
            for row in rows:  # what executemany does without pipeline mode: one round trip per row
                cur.execute(q, row)
    conn.commit()
    return time.monotonic() - t


def run(rows: int = 1_000_000, naive_rows: int = 50_000, repeat: int = 3) -> dict[str, Any]:
    """Measure and print; returns the figures (the caller, or `python -m bench.logs`, writes the JSON).
    The shipper and the bare COPY alternate `repeat` times into the emptied table; ratios are of medians
    (the bare COPY alone varied 70k-100k rows/s between runs on this shared machine)."""
    from odoo_stack_ops.sandbox.postgres import PgCluster

    work = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    files = {"odoo-core": str(work / "odoo.log"), "nginx-proxy": str(work / "nginx.log")}
    write_log(Path(files["odoo-core"]), "odoo-core", rows // 2)
    write_log(Path(files["nginx-proxy"]), "nginx-proxy", rows - rows // 2)
    pg = PgCluster().start()
    try:
        pg.createdb("logs")
        info = pg.conninfo("logs")
        sink = PgSink(info)
        sink.migrate()
        sink.close()
        built = prebuilt_rows(files)
        runs: list[dict[str, Any]] = []
        copies: list[float] = []
        for _ in range(repeat):
            with psycopg.connect(**info, autocommit=True) as conn:
                conn.execute("TRUNCATE ops.logs, ops.log_cursors")
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(info), json.dumps(files), str(BATCH)],
                                 capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            with psycopg.connect(**info) as conn:
                n = conn.execute("SELECT count(*) FROM ops.logs").fetchone()[0]  # type: ignore[index]
                assert n == runs[-1]["rows"] == len(built), (n, runs[-1]["rows"], len(built))
                assert runs[-1]["lines"] == rows, runs[-1]
                conn.execute("TRUNCATE ops.logs")
                conn.commit()
                register_row_dumpers(conn)
                t = time.monotonic()
                with conn.transaction():
                    copy_rows(conn, psycopg.sql.SQL("ops.logs"), built)
                copies.append(time.monotonic() - t)
            print(f"run {len(runs)}: shipper {runs[-1]['seconds']:.1f} s, bare COPY {copies[-1]:.1f} s")
        shipper = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
        shipper["rss_mb"] = max(r["rss_mb"] for r in runs)
        copy_s = statistics.median(copies)
        sample = [(uuid.UUID(bytes=r[0]), *r[1:]) for r in built[:naive_rows]]
        with psycopg.connect(**info) as conn:  # plain adapters: what a naive shipper would use
            naive_s = _timed_insert(conn, sample, pipelined=False)
            pipelined_s = _timed_insert(conn, sample, pipelined=True)
    finally:
        pg.stop()
        for f in files.values():
            os.unlink(f)
        work.rmdir()
    shipper_rps = shipper["rows"] / shipper["seconds"]
    copy_rps = len(built) / copy_s
    naive_rps = len(sample) / naive_s
    pipelined_rps = len(sample) / pipelined_s
    result = {
        "rows": shipper["rows"], "lines": shipper["lines"], "batches": shipper["batches"],
        "critical_lines": shipper["critical"], "rows_per_s": round(shipper_rps),
        "lines_per_s": round(shipper["lines"] / shipper["seconds"]), "shipper_s": round(shipper["seconds"], 2), "shipper_cpu_s": round(shipper["cpu_s"], 2),
        "copy_rows_per_s": round(copy_rps), "copy_s": round(copy_s, 2), "copy_ratio": round(shipper_rps / copy_rps, 3),
        "naive_rows_per_s": round(naive_rps), "naive_rows_measured": len(sample),
        "naive_ratio": round(shipper_rps / naive_rps, 2),
        "executemany_pipelined_rows_per_s": round(pipelined_rps),
        "executemany_pipelined_ratio": round(shipper_rps / pipelined_rps, 2),
        "peak_rss_mb": round(shipper["rss_mb"], 1), "batch_size": BATCH,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "repeat": repeat,
        "runs": {"shipper_s": [round(r["seconds"], 2) for r in runs], "copy_s": [round(c, 2) for c in copies]},
    }
    for key, label in (("lines", "log lines (Odoo + nginx)"), ("rows", "rows (tracebacks joined)"),
                       ("rows_per_s", "shipper rows/s (read+parse+COPY)"), ("copy_rows_per_s", "bare binary COPY rows/s"),
                       ("copy_ratio", "copy_ratio (target >= 0.7)"),
                       ("naive_rows_per_s", f"row-at-a-time INSERT rows/s ({naive_rows // 1000}k)"),
                       ("naive_ratio", "naive_ratio (target >= 3)"),
                       ("executemany_pipelined_rows_per_s", "psycopg3 pipelined executemany rows/s"),
                       ("executemany_pipelined_ratio", "shipper / pipelined executemany"),
                       ("peak_rss_mb", "shipper peak RSS MB")):
        print(f"{label:<42}{result[key]:>12}")
    return result


def main() -> None:
    result = run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logs.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"written {RESULTS / 'logs.json'}")


if __name__ == "__main__":
    main()
