"""A DigitalOcean API stand-in over TLS with its own test CA (pydo refuses bearer tokens on plain http).

Speaks the documented endpoints pydo 0.44 calls (paths and query parameters as in pydo/operations/_operations.py,
bodies as in DigitalOcean's OpenAPI specification):
- monitoring: `GET /v2/droplets?name=`, and `GET /v2/monitoring/metrics/droplet/<metric>` with `host_id`, `start`,
  `end` (plus `interface` and `direction` for bandwidth), answering Prometheus-style
  `{"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {...}, "values": [[ts, "v"]…]}]}}`.
  Units as DigitalOcean documents them: CPU as cumulative seconds per mode, memory and filesystem in bytes,
  bandwidth in Mbps;
- droplets: `GET /v2/droplets?tag_name=`, `GET /v2/droplets/{id}` (with `networks`), `GET /v2/droplets/{id}/snapshots`;
- snapshots: `POST /v2/droplets/{id}/actions` `{"type": "snapshot", "name": …}` → 201 `{"action": {…}}` (422 while
  another action is pending), polled through `GET /v2/actions/{id}` (in-progress for `action_polls` reads, then
  `action_outcome`: completed, which creates the snapshot, or errored); `GET /v2/snapshots?resource_type=droplet`
  with `page`/`per_page` and `links.pages.next`; `DELETE /v2/snapshots/{id}` → 204;
- the managed cluster: `GET /v2/databases`, `/v2/databases/{uuid}/backups`, `/ca` (base64 PEM), `/firewall`.
Errors as DigitalOcean answers them: no or a wrong bearer token → 401 `{"id": "Unauthorized", …}`; the read-only
token (`read_token`) writing → 403 `{"id": "forbidden", "message": "You do not have access for the attempted
action."}`; an unknown resource → 404 `{"id": "not_found", …}`; `rate_limit(n, retry_after)` makes the next n
requests answer 429 `{"id": "too_many_requests", …}` with `Retry-After` and `ratelimit-*` headers; a missing
parameter → 400.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from odoo_stack_ops.sandbox.tls import make_ca_and_cert

METRICS = "/v2/monitoring/metrics/droplet/"
GAUGES = ("memory_total", "memory_available", "memory_free", "memory_cached", "filesystem_free", "filesystem_size",
          "load_1", "load_5", "load_15")
CPUS = 4  # s-4vcpu-8gb
NOT_FOUND = {"id": "not_found", "message": "The resource you requested could not be found."}
FORBIDDEN = {"id": "forbidden", "message": "You do not have access for the attempted action."}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.calls: list[tuple[str, str]] = []  # (method, path with query) of every request
        self.read_token = "dop_v1_" + secrets.token_hex(32)  # a read-only token: writes answer 403
        self.droplet["networks"] = {"v4": [{"ip_address": "127.0.0.1", "type": "public", "netmask": "255.0.0.0",
                                            "gateway": "127.0.0.254"}], "v6": []}
        self.droplet["tags"] = ["odoo"]
        self.snapshots: list[dict[str, Any]] = []
        self.actions: dict[int, dict[str, Any]] = {}
        self.action_polls = 1  # GET /v2/actions/{id} answers in-progress this many times, then the outcome
        self.action_outcome = "completed"
        self._polls: dict[int, int] = {}
        self._next_id = 5000000
        self._limited = 0
        self.retry_after = 1
        self.cluster = {"id": str(uuid.uuid4()), "name": "odoo-db-sgp1", "engine": "pg", "version": "15",
                        "region": "sgp1", "status": "online", "num_nodes": 1, "size": "db-s-1vcpu-2gb"}
        now = datetime.now(UTC)
        self.backups: list[dict[str, Any]] = [  # daily, as DigitalOcean keeps them
            {"created_at": iso(now - timedelta(hours=h)), "size_gigabytes": 0.05} for h in (30, 6)]
        self.firewall_rules: list[dict[str, Any]] = []  # none: the cluster accepts any address
        self._lock = threading.Lock()
        self.ca_file, cert, key = make_ca_and_cert(base)
        self.ca_pem: bytes = self.ca_file.read_bytes()  # the cluster's CA (tests put a real cluster's here)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.endpoint = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                outer.requests.append(self.path)
                outer.calls.append((method, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization")
                if auth not in (f"Bearer {outer.token}", f"Bearer {outer.read_token}"):
                    return self._json(401, {"id": "Unauthorized", "message": "Unable to authenticate you."})
                with outer._lock:
                    limited = outer._limited > 0
                    if limited:
                        outer._limited -= 1
                if limited:
                    return self._json(429, {"id": "too_many_requests", "message": "API Rate limit exceeded."},
                                      {"Retry-After": str(outer.retry_after), "ratelimit-limit": "5000",
                                       "ratelimit-remaining": "0", "ratelimit-reset": "1700000000"})
                if method != "GET" and auth == f"Bearer {outer.read_token}":
                    return self._json(403, FORBIDDEN)
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    return self._json(400, {"id": "bad_request", "message": "request body is not JSON"})
                with outer._lock:
                    code, answer = outer.route(method, url.path, q, body)
                return self._json(code, answer)

            def _json(self, code: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def rate_limit(self, requests: int, retry_after: int = 1) -> None:
        """The next `requests` requests answer 429 with this Retry-After."""
        with self._lock:
            self._limited, self.retry_after = requests, retry_after

    def seed_snapshot(self, name: str, created: datetime, resource_id: int | None = None,
                      resource_type: str = "droplet") -> dict[str, Any]:
        """A snapshot that exists before the test (another team's, or an older one of ours)."""
        with self._lock:
            return self._add_snapshot(name, created, resource_id or int(self.droplet["id"]), resource_type)

    def _add_snapshot(self, name: str, created: datetime, resource_id: int, resource_type: str) -> dict[str, Any]:
        self._next_id += 1
        snap = {"id": str(self._next_id), "name": name, "created_at": iso(created), "regions": ["sgp1"],
                "resource_id": str(resource_id), "resource_type": resource_type, "min_disk_size": 160,
                "size_gigabytes": 12.4, "tags": []}
        self.snapshots.append(snap)
        return snap

    def route(self, method: str, path: str, q: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """The documented response for a request (called under the lock)."""
        parts = path.strip("/").split("/")
        droplet_id = str(self.droplet["id"])
        if method == "POST":
            if len(parts) == 4 and parts[:2] == ["v2", "droplets"] and parts[3] == "actions":
                return self._droplet_action(parts[2], body)
            return 404, NOT_FOUND
        if method == "DELETE":
            if len(parts) == 3 and parts[:2] == ["v2", "snapshots"]:
                found = [s for s in self.snapshots if s["id"] == parts[2]]
                if not found:
                    return 404, NOT_FOUND
                self.snapshots.remove(found[0])
                return 204, None
            return 404, NOT_FOUND
        if len(parts) == 3 and parts[:2] == ["v2", "actions"]:
            action = self.actions.get(int(parts[2])) if parts[2].isdigit() else None
            return (200, {"action": self._poll(action)}) if action else (404, NOT_FOUND)
        if path == "/v2/snapshots":
            found = [s for s in self.snapshots if q.get("resource_type") in (None, s["resource_type"])]
            return 200, self._page(found, "snapshots", path, q)
        if len(parts) >= 3 and parts[:2] == ["v2", "droplets"]:
            if parts[2] != droplet_id:
                return 404, NOT_FOUND
            if len(parts) == 3:
                return 200, {"droplet": self.droplet}
            if parts[3:] == ["snapshots"]:
                mine = [{**{k: s[k] for k in ("name", "created_at", "regions", "min_disk_size", "size_gigabytes")},
                         "id": int(s["id"]), "type": "snapshot", "distribution": "Ubuntu", "public": False}
                        for s in self.snapshots if s["resource_id"] == droplet_id and s["resource_type"] == "droplet"]
                return 200, self._page(mine, "snapshots", path, q)
            return 404, NOT_FOUND
        if path == "/v2/databases":
            return 200, {"databases": [self.cluster]}
        if len(parts) == 4 and parts[:2] == ["v2", "databases"]:
            if parts[2] != self.cluster["id"]:
                return 404, NOT_FOUND
            if parts[3] == "backups":
                return 200, {"backups": list(self.backups)}
            if parts[3] == "ca":
                return 200, {"ca": {"certificate": base64.b64encode(self.ca_pem).decode()}}
            if parts[3] == "firewall":
                return 200, {"rules": [{"cluster_uuid": self.cluster["id"], **r} for r in self.firewall_rules]}
            return 404, NOT_FOUND
        return self.answer(path, q)

    def _droplet_action(self, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if target != str(self.droplet["id"]):
            return 404, NOT_FOUND
        if body.get("type") != "snapshot":
            return 422, {"id": "unprocessable_entity", "message": "the stand-in only takes snapshots"}
        if any(a["status"] == "in-progress" for a in self.actions.values()):
            return 422, {"id": "unprocessable_entity", "message": "Droplet already has a pending event."}
        action_id = 1_000_000 + len(self.actions) + 1
        action = {"id": action_id, "status": "in-progress", "type": "snapshot", "started_at": iso(datetime.now(UTC)),
                  "completed_at": None, "resource_id": int(target), "resource_type": "droplet",
                  "region": {"slug": "sgp1", "name": "Singapore 1"}, "region_slug": "sgp1",
                  "_name": body.get("name") or f"{self.droplet['name']}-{int(datetime.now(UTC).timestamp())}"}
        self.actions[action_id] = action
        self._polls[action_id] = 0
        return 201, {"action": {k: v for k, v in action.items() if not k.startswith("_")}}

    def _poll(self, action: dict[str, Any]) -> dict[str, Any]:
        """Each read brings the action one step nearer its outcome; completing a snapshot creates it."""
        self._polls[action["id"]] += 1
        if action["status"] == "in-progress" and self._polls[action["id"]] > self.action_polls:
            now = datetime.now(UTC)
            action.update(status=self.action_outcome, completed_at=iso(now))
            if self.action_outcome == "completed":
                self._add_snapshot(action["_name"], now, int(action["resource_id"]), "droplet")
        return {k: v for k, v in action.items() if not k.startswith("_")}

    @staticmethod
    def _page(items: list[dict[str, Any]], key: str, path: str, q: dict[str, str]) -> dict[str, Any]:
        per_page = min(int(q.get("per_page", 20)), 200)
        page = max(int(q.get("page", 1)), 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        pages: dict[str, str] = {}
        if page * per_page < len(items):
            base = f"https://api.digitalocean.com{path}?per_page={per_page}"
            pages = {"next": f"{base}&page={page + 1}", "last": f"{base}&page={-(-len(items) // per_page)}"}
        return {key: chunk, "links": {"pages": pages} if pages else {}, "meta": {"total": len(items)}}

    def answer(self, path: str, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The documented response for a monitoring path and its query parameters."""
        if path == "/v2/droplets":
            found = [self.droplet] if q.get("name") in (None, self.droplet["name"]) else []
            if q.get("tag_name") is not None and q["tag_name"] not in self.droplet["tags"]:
                found = []
            return 200, {"droplets": found, "links": {}, "meta": {"total": len(found)}}
        if not path.startswith(METRICS):
            return 404, NOT_FOUND
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
