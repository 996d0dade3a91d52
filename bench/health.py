"""Health bench: 100 HTTP health checks against local endpoints, run as the sweep runs them (concurrently,
each with its own timeout) and one after another. The endpoints answer after a small delay, like a service
a few milliseconds away; a second round has 5 hung endpoints to show that per-check timeouts bound a sweep.

`python -m bench.health` (or `python -m bench health`) writes bench/results/health.json and prints a table.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from odoo_stack_ops.health.checks import Probe, http, run_all

LATENCY_S = 0.02  # a nearby service's response time
TARGET_S = 2.0
HUNG = 5
HUNG_TIMEOUT_S = 1.0
RESULTS = Path(__file__).parent / "results" / "health.json"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(LATENCY_S)
        body = b'{"status": "pass"}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _probes(urls: list[str], timeout_s: float) -> list[Probe]:
    # one session per probe, as each sweep's check opens its own connection
    return [Probe(f"http.{i}", lambda u=u, i=i: http(f"http.{i}", u, timeout_s, session=requests.Session()),
                  timeout_s + 1) for i, u in enumerate(urls)]


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.monotonic()
    out = fn()
    return time.monotonic() - start, out


def run(checks: int = 100, repeat: int = 3) -> dict[str, Any]:
    """Measure, print the table, write bench/results/health.json; returns the figures."""
    servers = [_Server(("127.0.0.1", 0), _Handler) for _ in range(4)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    hung = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(HUNG)]
    urls = [f"http://127.0.0.1:{servers[i % 4].server_address[1]}/web/health" for i in range(checks)]
    hung_urls = urls[: checks - HUNG] + [f"http://127.0.0.1:{h.getsockname()[1]}/web/health" for h in hung]
    conc, seq = [], []
    try:
        for _ in range(repeat):
            took, out = _timed(lambda: run_all(_probes(urls, 10)))
            assert sum(r.status == "ok" for r in out.results) == checks, [r for r in out.results if r.status != "ok"]
            conc.append(took)
            took, results = _timed(lambda: [p.fn() for p in _probes(urls, 10)])
            assert sum(r.status == "ok" for r in results) == checks
            seq.append(took)
        hung_conc, out = _timed(lambda: run_all(_probes(hung_urls, HUNG_TIMEOUT_S)))
        assert sum(r.status == "fail" for r in out.results) == HUNG
        hung_seq, _ = _timed(lambda: [p.fn() for p in _probes(hung_urls, HUNG_TIMEOUT_S)])
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        for h in hung:
            h.close()
    result = {
        "checks": checks, "concurrent_s": round(statistics.median(conc), 3),
        "sequential_s": round(statistics.median(seq), 3), "speedup": round(statistics.median(seq) / statistics.median(conc), 1),
        "target_concurrent_s": TARGET_S, "endpoint_latency_s": LATENCY_S, "repeat": repeat,
        "with_hung_endpoints": HUNG, "hung_timeout_s": HUNG_TIMEOUT_S,
        "hung_concurrent_s": round(hung_conc, 3), "hung_sequential_s": round(hung_seq, 3),
    }
    rows = [("checks", f"{checks}"),
            (f"concurrent, median of {repeat} (target <= {TARGET_S:g} s)", f"{result['concurrent_s']:.3f} s"),
            (f"sequential, median of {repeat}", f"{result['sequential_s']:.3f} s"),
            ("speedup", f"{result['speedup']:.1f} x"),
            (f"concurrent, {HUNG} hung (timeout {HUNG_TIMEOUT_S:g} s)", f"{hung_conc:.3f} s"),
            (f"sequential, {HUNG} hung", f"{hung_seq:.3f} s")]
    width = max(len(k) for k, _ in rows) + 2
    print(f"health bench: {checks} HTTP checks, endpoints answering in {LATENCY_S * 1000:.0f} ms")
    for k, v in rows:
        print(f"  {k:<{width}}{v:>10}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    run()
