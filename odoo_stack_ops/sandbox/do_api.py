"""A DigitalOcean API stand-in over TLS with its own test CA (pydo refuses bearer tokens on plain http).

Speaks the documented endpoints pydo 0.44 calls for monitoring (paths and query parameters as in
pydo/operations/_operations.py): `GET /v2/droplets?name=`, and `GET /v2/monitoring/metrics/droplet/<metric>`
with `host_id`, `start`, `end` (plus `interface` and `direction` for bandwidth), answering Prometheus-style
`{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {...}, "values": [[ts, "v"]…]}]}}`.
Units as DigitalOcean documents them: CPU as cumulative seconds per mode, memory and filesystem in bytes,
bandwidth in Mbps. A missing or wrong bearer token → 401; a missing parameter → 400.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from odoo_stack_ops.sandbox.postgres import make_ca_and_cert

METRICS = "/v2/monitoring/metrics/droplet/"
GAUGES = ("memory_total", "memory_available", "memory_free", "memory_cached", "filesystem_free", "filesystem_size",
          "load_1", "load_5", "load_15")
CPUS = 4  # s-4vcpu-8gb


class DigitalOceanStandIn:
    """Set the attributes (cpu_busy_percent, memory_used_percent, disks, bandwidth_mbps) to shape the metrics."""

    def __init__(self, base: Path, droplet_name: str = "odoo-erp-prod", droplet_id: int = 3164494,
                 step_s: int = 60) -> None:
        self.token = "dop_v1_" + secrets.token_hex(32)
        self.droplet = {"id": droplet_id, "name": droplet_name, "region": {"slug": "sgp1"},
                        "size_slug": "s-4vcpu-8gb", "status": "active"}
        self.step_s = step_s
        self.cpu_busy_percent = 10.0
        self.memory_total_bytes = 8 * 2**30
        self.memory_used_percent = 40.0
        self.disks: dict[str, tuple[int, float]] = {"/": (160 * 10**9, 30.0)}  # mount → (size bytes, used %)
        self.bandwidth_mbps: dict[tuple[str, str], float] = {("public", "inbound"): 2.0, ("public", "outbound"): 1.0,
                                                             ("private", "inbound"): 0.1, ("private", "outbound"): 0.1}
        self.requests: list[str] = []
        self.ca_file, cert, key = make_ca_and_cert(base)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.endpoint = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._json(401, {"id": "Unauthorized", "message": "Unable to authenticate you."})
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                code, body = outer.answer(url.path, q)
                return self._json(code, body)

            def _json(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def answer(self, path: str, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The documented response for a path and its query parameters."""
        if path == "/v2/droplets":
            found = [self.droplet] if q.get("name") in (None, self.droplet["name"]) else []
            return 200, {"droplets": found, "links": {}, "meta": {"total": len(found)}}
        if not path.startswith(METRICS):
            return 404, {"id": "not_found", "message": "The resource you requested could not be found."}
        metric = path.removeprefix(METRICS)
        needed = ["host_id", "start", "end"] + (["interface", "direction"] if metric == "bandwidth" else [])
        missing = [k for k in needed if not q.get(k)]
        if missing:
            return 400, {"id": "bad_request", "message": f"missing query parameter(s): {', '.join(missing)}"}
        if q["host_id"] != str(self.droplet["id"]):
            return 404, {"id": "not_found", "message": "The resource you requested could not be found."}
        try:
            start, end = int(q["start"]), int(q["end"])
        except ValueError:
            return 400, {"id": "bad_request", "message": "start and end must be UNIX timestamps"}
        if end < start:
            return 400, {"id": "bad_request", "message": "end must not be before start"}
        times = list(range(start - start % self.step_s + self.step_s, end + 1, self.step_s)) or [end]
        if metric == "cpu":
            return 200, self._matrix(self._cpu(times))
        if metric == "bandwidth":
            key = (q["interface"], q["direction"])
            if key not in self.bandwidth_mbps:
                return 400, {"id": "bad_request", "message": "interface must be public|private, direction "
                                                             "inbound|outbound"}
            labels = {"host_id": q["host_id"], "interface": key[0], "direction": key[1]}
            return 200, self._matrix([(labels, [(t, self.bandwidth_mbps[key]) for t in times])])
        if metric in GAUGES:
            return 200, self._matrix(self._gauge(metric, q["host_id"], times))
        return 404, {"id": "not_found", "message": "The resource you requested could not be found."}

    def _cpu(self, times: list[int]) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """Cumulative CPU seconds per mode since an arbitrary boot, growing at the configured busy share."""
        busy = self.cpu_busy_percent / 100
        shares = {"idle": 1 - busy, "user": busy * 0.7, "system": busy * 0.2, "iowait": 0.0, "steal": busy * 0.1}
        boot = times[0] - 86400
        host = str(self.droplet["id"])
        return [({"host_id": host, "mode": mode}, [(t, CPUS * share * (t - boot)) for t in times])
                for mode, share in shares.items()]

    def _gauge(self, metric: str, host: str, times: list[int]) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        total = self.memory_total_bytes
        if metric.startswith("memory"):
            avail = total * (1 - self.memory_used_percent / 100)
            value = {"memory_total": total, "memory_available": avail, "memory_free": avail * 0.6,
                     "memory_cached": avail * 0.4}[metric]
            return [({"host_id": host}, [(t, value) for t in times])]
        if metric.startswith("filesystem"):
            out = []
            for i, (mount, (size, used)) in enumerate(sorted(self.disks.items())):
                labels = {"host_id": host, "device": f"/dev/vd{'abcdefgh'[i]}1", "fstype": "ext4", "mountpoint": mount}
                value = size if metric == "filesystem_size" else size * (1 - used / 100)
                out.append((labels, [(t, value) for t in times]))
            return out
        load = CPUS * self.cpu_busy_percent / 100
        return [({"host_id": host}, [(t, load) for t in times])]

    @staticmethod
    def _matrix(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> dict[str, Any]:
        return {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": labels, "values": [[t, str(round(v, 3))] for t, v in points]}
            for labels, points in series]}}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
