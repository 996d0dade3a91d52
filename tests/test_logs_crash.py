"""The shipper killed at random points 100 times while a container logs: afterwards every line is in
ops.logs exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from odoo_stack_ops.config import ContainerSpec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
LINES = 6000


def test_killed_100_times_loses_and_doubles_nothing(stack_tree, podman, docker_client, sandbox_image, pg, unique,
                                                     tmp_path):
    pg.createdb("crash_logs")
    project = f"crash{unique}"
    script = f'i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo "worker line $i"; ' \
             '[ $((i % 20)) -eq 0 ] && usleep 10000; done; exec sleep 100000'
    container = docker_client.containers.run(
        sandbox_image, ["sh", "-c", script], detach=True, init=True, name=f"{project}-worker-1",
        labels={"com.docker.compose.service": "worker", "com.docker.compose.project": project}, network_mode="host")
    info = pg.conninfo("crash_logs")
    tree = {**stack_tree, "name": f"crash-{unique}",
            "docker": {"mode": "local", "base_url": podman.base_url, "compose_project": project},
            "containers": {"worker": ContainerSpec(service="worker", image="x").model_dump()},
            "supabase": {"db_dsn": f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/"
                                   "crash_logs?sslmode=disable", "sink": "postgres"}}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    argv = [sys.executable, "-m", "odoo_stack_ops.logs.ship", "--stack-file", str(path), "--settle", "0",
            "--batch", "40"]
    from odoo_stack_ops.logs.sinks import PgSink

    sink = PgSink(info)
    sink.migrate()
    sink.close()
    rnd = random.Random(11)
    kills = 0
    try:
        for _ in range(100):
            proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.3, 1.6))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
        deadline = time.monotonic() + 120
        while f"worker line {LINES}".encode() not in container.logs(tail=1) and time.monotonic() < deadline:
            time.sleep(0.5)
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=120)
        with psycopg.connect(**info) as conn:
            messages = [r[0] for r in conn.execute("SELECT message FROM ops.logs WHERE host = %s", (tree["name"],))]
    finally:
        container.remove(force=True)
    assert kills >= 50  # most runs really were interrupted
    expected = {f"worker line {i}" for i in range(1, LINES + 1)}
    assert len(messages) == LINES, f"{len(messages) - LINES:+d} rows"
    assert set(messages) == expected
