"""Health bench: 100 health checks run as the sweep runs them (`run_all`: concurrently, each with its own
timeout) and one after another, through the product's check code (odoo_stack_ops.health.checks):

- HTTP-only (the first figures, kept): 100 GETs of endpoints that answer after 20 ms;
- mixed: 20 each of HTTP, TCP connect, TLS database `SELECT 1` (verify-full, a real PostgreSQL 15), an SSH
  command (the host-resources script over one shared connection to a real sshd) and Docker inspect (the
  containers check against podman's Engine API, one shared client), as one sweep shares its connections;
- mixed plus 5 hung endpoints (two HTTP, database, SSH, Docker: each accepts the connection and never
  answers), every check with a 1 s timeout: the sweep must end within timeout + 1 s.

`python -m bench.health` (or `python -m bench health`) writes bench/results/health.json and prints a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import requests

from odoo_stack_ops.config import Thresholds
from odoo_stack_ops.executors.ssh import SSHExecutor
from odoo_stack_ops.health import checks as hc
from odoo_stack_ops.health.checks import Probe, http, run_all
from odoo_stack_ops.sandbox.images import build_image
from odoo_stack_ops.sandbox.podman import PodmanService
from odoo_stack_ops.sandbox.postgres import PgCluster
from odoo_stack_ops.sandbox.sshd import SshServer

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


class _Silent:
    """Endpoints that accept a connection and never answer (a hung process behind a live socket)."""

    def __init__(self) -> None:
        self.tcp = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(4)]
        self.dir = tempfile.mkdtemp(prefix="bench-hung-")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(f"{self.dir}/docker.sock")
        self.unix.listen(64)

    def port(self, i: int) -> int:
        return int(self.tcp[i].getsockname()[1])

    def close(self) -> None:
        for s in [*self.tcp, self.unix]:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Mixed:
    """The real services the mixed checks talk to, started once."""

    def __init__(self, http_ports: list[int]) -> None:
        self.http_ports = http_ports
        self.pg = PgCluster(tls=True).start()
        self.sshd = SshServer().start()
        self.podman = PodmanService().start()
        self.silent = _Silent()
        self.db = self.pg.database_config("postgres")  # verify-full with the cluster's CA
        self.ssh = SSHExecutor(self.sshd.ssh_config())
        self.client = self.podman.client()
        image = build_image(self.podman)
        self.services = ["odoo-core", "nginx-proxy"]
        for svc in self.services:
            self.client.containers.run(image, ["sleep", "3600"], name=f"bench-{svc}-1", detach=True, init=True,
                                       network_mode="none", labels={hc.SERVICE_LABEL: svc,
                                                                    hc.PROJECT_LABEL: "bench"})
        self.th = Thresholds()

    def probes(self, t: float, hung: bool) -> list[Probe]:
        """20 of each kind (the last 5 pointed at silent endpoints when `hung`), each with timeout t."""
        now = time.time()
        db_hung = self.db.model_copy(update={"port": self.silent.port(2)})
        ssh_hung = self.sshd.ssh_config(port=self.silent.port(3), connect_timeout_s=t)
        kinds = {
            "http": lambda i: (lambda: http(f"http.{i}", f"http://127.0.0.1:{self.http_ports[i % 4]}/web/health", t,
                                            session=requests.Session())),
            "tcp": lambda i: (lambda: hc.tcp(f"tcp.{i}", "127.0.0.1", self.http_ports[i % 4], t)),
            "db": lambda i: (lambda: hc.db_query(self.db, t)),
            "ssh": lambda i: (lambda: hc.host_resources(self.ssh, self.th, ["/"], {}, now, t)),
            "docker": lambda i: (lambda: hc.containers(self.client, self.services, "bench", {})),
        }
        hung_fns = [
            lambda: http("http.hung0", f"http://127.0.0.1:{self.silent.port(0)}/web/health", t, session=requests.Session()),
            lambda: http("http.hung1", f"http://127.0.0.1:{self.silent.port(1)}/web/health", t, session=requests.Session()),
            lambda: hc.db_query(db_hung, t),
            lambda: hc.host_resources(SSHExecutor(ssh_hung), self.th, ["/"], {}, now, t),
            lambda: hc.containers(docker.DockerClient(base_url=f"unix://{self.silent.dir}/docker.sock", timeout=t),
                                      self.services, "bench", {}),
        ]
        probes = [Probe(f"{kind}.{i}", make(i), t) for kind, make in kinds.items() for i in range(20)]
        if hung:
            probes = [p for i, p in enumerate(probes) if i % 20 != 19] + [
                Probe(f"hung.{i}", fn, t) for i, fn in enumerate(hung_fns)]
        return probes

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ssh.close()
        self.client.close()
        self.silent.close()
        self.podman.stop()
        self.sshd.stop()
        self.pg.stop()


def _statuses(results: list[hc.CheckResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def run_mixed(http_ports: list[int], repeat: int) -> dict[str, Any]:
    """The mixed sweep: concurrent and sequential medians, then the round with 5 hung endpoints."""
    mixed = _Mixed(http_ports)
    conc, seq = [], []
    try:
        run_all(mixed.probes(10, hung=False))  # warm-up: first SSH connection, image and pool set-up
        for _ in range(repeat):
            took, out = _timed(lambda: run_all(mixed.probes(10, hung=False)))
            bad = [r for r in out.results if r.status == "fail"]
            assert not bad, bad
            conc.append(took)
            took, _ = _timed(lambda: [p.fn() for p in mixed.probes(10, hung=False)])
            seq.append(took)
        hung_conc, out = _timed(lambda: run_all(mixed.probes(HUNG_TIMEOUT_S, hung=True)))
        failed = sorted(f"{r.name}: {r.value} after {r.duration:.2f} s {r.evidence[:120]}".strip()
                        for r in out.results if r.status == "fail")
        assert len(failed) >= HUNG, failed  # the hung five; anything else slower than the timeout is listed too
        statuses = _statuses(out.results)
        load = os.getloadavg()[0]
    finally:
        mixed.close()
    return {"load_avg_1m": round(load, 1),"mixed_checks": 100, "mixed_kinds": ["http", "tcp", "db_tls_select1", "ssh_command", "docker_inspect"],
            "mixed_concurrent_s": round(statistics.median(conc), 3),
            "mixed_sequential_s": round(statistics.median(seq), 3),
            "mixed_hung_concurrent_s": round(hung_conc, 3), "mixed_hung_statuses": statuses,
            "mixed_hung_failed": failed, "mixed_runs_s": [round(c, 3) for c in conc]}


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
        mixed = run_mixed([s.server_address[1] for s in servers], repeat)
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
        **mixed, "mixed_target_s": TARGET_S, "mixed_hung_target_s": HUNG_TIMEOUT_S + 1,
    }
    rows = [("checks", f"{checks}"),
            (f"concurrent, median of {repeat} (target <= {TARGET_S:g} s)", f"{result['concurrent_s']:.3f} s"),
            (f"sequential, median of {repeat}", f"{result['sequential_s']:.3f} s"),
            ("speedup", f"{result['speedup']:.1f} x"),
            (f"concurrent, {HUNG} hung (timeout {HUNG_TIMEOUT_S:g} s)", f"{hung_conc:.3f} s"),
            (f"sequential, {HUNG} hung", f"{hung_seq:.3f} s"),
            (f"mixed 100 (HTTP/TCP/TLS DB/SSH/Docker), concurrent (target <= {TARGET_S:g} s)",
             f"{mixed['mixed_concurrent_s']:.3f} s"),
            ("mixed 100, sequential", f"{mixed['mixed_sequential_s']:.3f} s"),
            (f"mixed 95 + {HUNG} hung, concurrent (target <= {HUNG_TIMEOUT_S + 1:g} s)",
             f"{mixed['mixed_hung_concurrent_s']:.3f} s")]
    width = max(len(k) for k, _ in rows) + 2
    print(f"health bench: {checks} checks, HTTP endpoints answering in {LATENCY_S * 1000:.0f} ms")
    for k, v in rows:
        print(f"  {k:<{width}}{v:>10}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    run()
