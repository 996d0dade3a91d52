"""Update bench: downtime per service while stack-update recreates it on a new image.

Three stand-in services whose start-up takes 1 s run from a real registry on loopback (Debian's docker-registry)
through podman's Docker API. Each round pushes a new build under the services' tag and runs stack-update's
per-service steps (record → pull → recreate → health gate: the functions the flow's tasks call; the lock and
the pre-update backup come before any container stops, so they add no downtime). A client per service polls
its health path every 50 ms; downtime = from the last 200 served by the old container to the first by the new.
The raw baseline in the same run: the same container stopped, removed and run again by hand (what
`docker compose up -d` does), measured by the same client.

`python -m bench update` writes bench/results/update.json and prints a table.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import requests

from odoo_stack_ops.prefect_local import free_port
from odoo_stack_ops.sandbox import registry as reg
from odoo_stack_ops.sandbox.images import build_image
from odoo_stack_ops.sandbox.podman import PodmanService, force_remove
from odoo_stack_ops.stack import engine

SERVICES = ("web", "n8n", "odoo-core")
STARTUP_S = 1.0
POLL_S = 0.05
TARGET_S = 5.0
PROJECT = "benchupd"
RESULTS = Path(__file__).parent / "results" / "update.json"


class Poller:
    """Polls one URL every 50 ms; the longest gap between two answered 200s is the downtime."""

    def __init__(self, url: str) -> None:
        self.url, self.ok_at = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            tick = time.monotonic()
            with contextlib.suppress(requests.RequestException):
                if session.get(self.url, timeout=0.5).status_code == 200:
                    self.ok_at.append(time.monotonic())
            self._stop.wait(max(0.0, POLL_S - (time.monotonic() - tick)))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # a few answers from the new container close the last gap
        self._stop.set()
        self._thread.join(5)

    def downtime(self) -> float:
        gaps = [b - a for a, b in zip(self.ok_at, self.ok_at[1:], strict=False)]
        return round(max(gaps, default=float("nan")), 3)


def _run_container(client: Any, ref: str, service: str, port: int) -> Any:
    return client.containers.run(
        ref, ["/usr/bin/sandbox-entry", service, str(port)], name=f"{PROJECT}-{service}-1", detach=True,
        network_mode="host", init=True, restart_policy={"Name": "unless-stopped"},
        labels={"com.docker.compose.service": service, "com.docker.compose.project": PROJECT},
        environment={"HEALTH_PORT": str(port)})


def _wait(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def run(repeat: int = 3) -> dict[str, Any]:
    per_service: dict[str, list[float]] = {s: [] for s in SERVICES}
    baseline: list[float] = []
    steps: list[float] = []
    with PodmanService() as podman, reg.Registry() as registry:
        base = build_image(podman)
        builds = [reg.build(podman, base, f"localhost/bench-update:{n}",
                            {"/usr/bin/sandbox-entry": reg.slow_entry(STARTUP_S), "/var/www/version": f"{n}\n"})
                  for n in ("a", "b")]
        client = podman.client()
        refs = {s: f"{registry.host}/bench-{s}:stable" for s in SERVICES}
        ports = {s: free_port() for s in SERVICES}
        urls = {s: f"http://127.0.0.1:{ports[s]}/healthz" for s in SERVICES}
        for s in SERVICES:
            reg.push(podman, "localhost/bench-update:a", refs[s])
            client.images.pull(refs[s])
            _run_container(client, refs[s], s, ports[s])
            _wait(urls[s])
        for i in range(repeat):
            build = "b" if i % 2 == 0 else "a"
            for s in SERVICES:
                reg.push(podman, f"localhost/bench-update:{build}", refs[s])
            for s in SERVICES:  # one service at a time, as the flow goes
                started = time.monotonic()
                rec = engine.record(client, s, PROJECT)
                new_id = engine.pull(client, rec.image_ref)
                assert new_id == builds["ab".index(build)], (new_id, builds)
                with Poller(urls[s]) as poller:
                    cid = engine.recreate(client, rec, stop_timeout=10)
                    engine.gate(client, cid, urls[s], timeout_s=30)
                per_service[s].append(poller.downtime())
                steps.append(round(time.monotonic() - started, 3))
                served = requests.get(urls[s].replace("/healthz", "/version"), timeout=2).text.strip()
                assert served == build, (s, served, build)
        for _ in range(repeat):  # the raw baseline: stop, remove, run again by hand
            s = SERVICES[0]
            old = client.containers.get(f"{PROJECT}-{s}-1")
            with Poller(urls[s]) as poller:
                old.stop(timeout=10)
                force_remove(old)
                _run_container(client, refs[s], s, ports[s])
                _wait(urls[s])
            baseline.append(poller.downtime())
        for ctr in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
            force_remove(ctr)
        client.close()
    medians = {s: round(statistics.median(v), 3) for s, v in per_service.items()}
    result = {
        "downtime_s": max(medians.values()),
        "downtime_per_service_s": medians,
        "downtime_rounds_s": per_service,
        "baseline_stop_rm_run_s": round(statistics.median(baseline), 3),
        "service_startup_s": STARTUP_S,
        "poll_interval_s": POLL_S,
        "target_s": TARGET_S,
        "meets_target": max(medians.values()) <= TARGET_S,
        "per_service_step_s_median": round(statistics.median(steps), 3),
        "repeat": repeat,
        "note": "medians over rounds; downtime from the last 200 of the old container to the first of the new, "
                "polled every 50 ms; the step includes record and pull (no downtime while they run)",
    }
    print(f"{'service':<12}{'downtime s (median)':>22}{'rounds':>30}")
    for s in SERVICES:
        print(f"{s:<12}{medians[s]:>22}{per_service[s]!s:>30}")
    print(f"worst {result['downtime_s']} s (target ≤ {TARGET_S} s, start-up {STARTUP_S} s); raw stop/rm/run "
          f"baseline {result['baseline_stop_rm_run_s']} s")
    return result


if __name__ == "__main__":
    out = run()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
