"""A DigitalOcean API stand-in over TLS (pydo refuses bearer tokens on plain http), speaking the documented
endpoints we call: `GET /v2/droplets?name=`, `GET /v2/monitoring/metrics/droplet/cpu?host_id&start&end`
(Prometheus matrix of cumulative CPU seconds per mode). Wrong or missing bearer token → 401."""

from __future__ import annotations

import json
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from odoo_stack_ops.sandbox.postgres import make_ca_and_cert


class DigitalOceanStandIn:
    def __init__(self, base: Path, droplet_name: str = "odoo-erp-prod", droplet_id: int = 3164494) -> None:
        self.token = "dop_v1_" + secrets.token_hex(16)
        self.droplet = {"id": droplet_id, "name": droplet_name, "region": {"slug": "sgp1"}, "size_slug": "s-4vcpu-8gb"}
        self.cpu_busy_percent = 10.0
        self.requests: list[str] = []
        self.ca_file, cert, key = make_ca_and_cert(base)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._json(401, {"id": "unauthorized", "message": "Unable to authenticate you"})
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/v2/droplets":
                    found = [outer.droplet] if q.get("name") in (None, outer.droplet["name"]) else []
                    return self._json(200, {"droplets": found, "links": {}, "meta": {"total": len(found)}})
                if url.path == "/v2/monitoring/metrics/droplet/cpu":
                    if q.get("host_id") != str(outer.droplet["id"]) or "start" not in q or "end" not in q:
                        return self._json(400, {"id": "bad_request", "message": "host_id, start and end required"})
                    return self._json(200, outer.cpu_matrix(int(q["start"]), int(q["end"])))
                return self._json(404, {"id": "not_found", "message": "The resource you requested could not be found."})

            def _json(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.endpoint = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def cpu_matrix(self, start: int, end: int) -> dict:
        """Cumulative CPU seconds per mode (4 vCPUs), sampled each minute, at the configured busy share."""
        busy = self.cpu_busy_percent / 100
        series = {"idle": 1 - busy, "user": busy * 0.8, "system": busy * 0.2}
        result = []
        for mode, share in series.items():
            values = [[t, str(round(4 * share * (t - start), 3))] for t in range(start, end + 1, 60)]
            result.append({"metric": {"host_id": str(self.droplet["id"]), "mode": mode}, "values": values})
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
