"""The shipper killed (SIGKILL) at random points 100 times while two containers keep logging: afterwards every
line is in ops.logs exactly once, and every Odoo traceback is joined to its entry exactly once."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import yaml

from odoo_stack_ops.config import ContainerSpec
from odoo_stack_ops.logs.sink_pg import PgSink
from tests.checks import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
KILLS = 100

# a generic worker: numbered lines on stdout (every 7th on stderr), ~300 lines/s until told to stop
WORKER = r"""i=0
while [ ! -e /tmp/stop ]; do
  j=0; while [ $j -lt 10 ]; do i=$((i+1)); j=$((j+1))
    if [ $((i % 7)) -eq 0 ]; then echo "worker line $i" >&2; else echo "worker line $i"; fi
  done; usleep 30000
done
echo "worker done $i"; exec sleep 100000"""
# odoo-core: Odoo-format entries, every 5th an ERROR with a two-line traceback, ~60 entries/s
ODOO = r"""i=0
while [ ! -e /tmp/stop ]; do i=$((i+1))
  if [ $((i % 5)) -eq 0 ]; then
    printf '%s,000 1 ERROR odoo_core odoo.http: entry %s\nTraceback (most recent call last):\nValueError: %s\n' \
      "$(date -u '+%Y-%m-%d %H:%M:%S')" $i $i >&2
  else echo "$(date -u '+%Y-%m-%d %H:%M:%S'),000 1 INFO odoo_core odoo.service: entry $i" >&2; fi
  usleep 15000
done
echo "$(date -u '+%Y-%m-%d %H:%M:%S'),000 1 INFO odoo_core odoo.service: odoo done $i" >&2; exec sleep 100000"""
# A fork server: imports the shipper once, then forks one shipper per line on stdin (each opens its own
# connections, as a fresh process would) and reports when it died; a kill costs no interpreter start-up.
FORK_SERVER = r"""
import os, sys
from odoo_stack_ops.logs import ship
import odoo_stack_ops.config, odoo_stack_ops.connect, docker
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            ship.main(sys.argv[1:])
        finally:
            os._exit(0)
    print(f"pid {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"died {status}", flush=True)
"""


def start(client, image, project, service, script):
    return client.containers.run(
        image, ["sh", "-c", script], detach=True, init=True, name=f"{project}-{service}-1", network_mode="host",
        labels={"com.docker.compose.service": service, "com.docker.compose.project": project})


def test_killed_100_times_loses_and_doubles_nothing(stack_tree, podman, docker_client, sandbox_image, pg, unique,
                                                     tmp_path):
    pg.createdb(f"crash_{unique}")
    info = pg.conninfo(f"crash_{unique}")
    sink = PgSink(info)
    sink.migrate()
    sink.close()
    project = f"crash{unique}"
    made = {"worker": start(docker_client, sandbox_image, project, "worker", WORKER),
            "odoo-core": start(docker_client, sandbox_image, project, "odoo-core", ODOO)}
    tree = {**stack_tree, "name": f"crash-{unique}",
            "docker": {"mode": "local", "base_url": podman.base_url, "compose_project": project},
            "containers": {s: ContainerSpec(service=s, image="x").model_dump() for s in made},
            "supabase": {"db_dsn": f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/"
                                   f"{info['dbname']}?sslmode=disable", "sink": "postgres"}}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    # settle 1.5 s: an Odoo entry is shipped only once its traceback lines (written with it) are surely in
    args = ["--stack-file", str(path), "--settle", "1.5", "--batch", "25", "--loop"]
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER, *args], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    assert server.stdin is not None and server.stdout is not None
    rnd = random.Random(int(unique, 16))
    pg_log = pg.base / "log"
    torn_before = pg_log.read_text(errors="replace").count("open transaction")
    kills, started = 0, time.monotonic()
    try:
        for _ in range(KILLS):
            server.stdin.write("go\n")
            said = {w[0]: w[1:] for w in (server.stdout.readline().split(), server.stdout.readline().split())}
            assert said.keys() == {"pid", "ready"}, f"the shipper did not start: {said}"
            pid = int(said["pid"][0])
            time.sleep(rnd.uniform(0.0, 0.35))  # somewhere in reading, parsing, COPY or commit
            os.kill(pid, signal.SIGKILL)
            died = server.stdout.readline().split()
            assert died[0] == "died" and os.WIFSIGNALED(int(died[1])), "a looping shipper never exits by itself"
            kills += 1
        kill_phase = time.monotonic() - started
        # PostgreSQL logs "unexpected EOF on client connection with an open transaction" for each kill that
        # landed inside a batch (during COPY or before COMMIT)
        torn = pg_log.read_text(errors="replace").count("open transaction") - torn_before
        for c in made.values():
            c.exec_run(["touch", "/tmp/stop"])
        wait_until(lambda: b"worker done" in made["worker"].logs(tail=1)
                   and b"odoo done" in made["odoo-core"].logs(tail=1, stdout=False), 60, "both writers done", 0.3)
        time.sleep(1)
        server.stdin.close()
        server.wait(timeout=10)
        subprocess.run([sys.executable, "-m", "odoo_stack_ops.logs.ship", *args[:-3], "--settle", "0"], cwd=ROOT,
                       check=True, capture_output=True, timeout=120)
        worker_n = int(re.search(rb"worker done (\d+)", made["worker"].logs()).group(1))  # type: ignore[union-attr]
        odoo_n = int(re.search(rb"odoo done (\d+)", made["odoo-core"].logs()).group(1))  # type: ignore[union-attr]
        with psycopg.connect(**info) as conn:
            got = conn.execute("SELECT container, stream, message FROM ops.logs WHERE host = %s",
                               (tree["name"],)).fetchall()
            batches = conn.execute("SELECT sum(rows_shipped) FROM ops.log_cursors WHERE host = %s",
                                   (tree["name"],)).fetchone()[0]
    finally:
        if server.poll() is None:
            server.kill()
        for c in made.values():
            c.remove(force=True)
    assert kills == KILLS
    assert torn >= 10, f"only {torn} kills landed inside a transaction (kill phase {kill_phase:.0f} s)"
    worker = sorted(m for c, _, m in got if c.endswith("worker-1"))
    expected = sorted([f"worker line {i}" for i in range(1, worker_n + 1)] + [f"worker done {worker_n}"])
    assert len(worker) == len(expected), f"worker: {len(worker) - len(expected):+d} rows"
    assert worker == expected
    assert all(s == ("stderr" if m.startswith("worker line") and int(m.split()[-1]) % 7 == 0 else "stdout")
               for c, s, m in got if c.endswith("worker-1"))
    odoo = sorted((m for c, _, m in got if c.endswith("odoo-core-1")), key=lambda m: (int(m.split()[-1]), m.startswith("odoo done")))
    expected_odoo = [f"entry {i}" + (f"\nTraceback (most recent call last):\nValueError: {i}" if i % 5 == 0 else "")
                     for i in range(1, odoo_n + 1)] + [f"odoo done {odoo_n}"]
    assert len(odoo) == len(expected_odoo), f"odoo: {len(odoo) - len(expected_odoo):+d} rows"
    assert odoo == expected_odoo
    assert worker_n > 3000 and odoo_n > 600  # the containers really logged during the kills
    assert batches == len(got)  # the cursors account for every row: no batch committed without its cursor
