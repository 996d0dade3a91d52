"""Health bench: 100 HTTP checks against local endpoints (each answering after 20 ms, like a nearby service),
run concurrently as the sweep does vs one after another. Writes bench/results/health.json."""

from __future__ import annotations

import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from odoo_stack_ops.health import checks
from tasks.health import run_concurrently

LATENCY_S = 0.02


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(LATENCY_S)
        body = b'{"status": "pass"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run(checks_n: int = 100, repeat: int = 5) -> dict[str, Any]:
    ThreadingHTTPServer.daemon_threads = True
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(4)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{servers[i % 4].server_address[1]}/web/health" for i in range(checks_n)]
    probes = [(f"http.{i}", lambda u=u, i=i: checks.http(f"http.{i}", u)) for i, u in enumerate(urls)]
    conc, seq = [], []
    try:
        for _ in range(repeat):
            t = time.monotonic()
            results = run_concurrently(probes, timeout_s=30)
            conc.append(time.monotonic() - t)
            assert sum(r.status == "ok" for r in results) == checks_n
            t = time.monotonic()
            for _, fn in probes:
                fn()
            seq.append(time.monotonic() - t)
    finally:
        for s in servers:
            s.shutdown()
    result = {"checks": checks_n, "concurrent_s": round(statistics.median(conc), 3),
              "sequential_s": round(statistics.median(seq), 3), "endpoint_latency_s": LATENCY_S, "repeat": repeat,
              "speedup": round(statistics.median(seq) / statistics.median(conc), 1)}
    print(f"{'checks':<28}{checks_n:>10}\n{'concurrent (median), target <= 2 s':<36}{result['concurrent_s']:>7.3f} s\n"
          f"{'sequential (median)':<36}{result['sequential_s']:>7.3f} s\n{'speedup':<36}{result['speedup']:>7.1f} x")
    return result


if __name__ == "__main__":
    import json
    from pathlib import Path

    out = run()
    (Path(__file__).with_name("results") / "health.json").write_text(json.dumps(out, indent=2) + "\n")
