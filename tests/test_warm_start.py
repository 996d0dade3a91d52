"""Warm starts on the `ops-process` pool (odoo_stack_ops/warm_start.py, the pool's command in prefect.yaml):
runs forked from one zygote reach Completed; a warm run cancelled mid-dump ends Cancelled with its process gone;
a launcher killed takes its forked run along (Crashed); changed code makes the next run cold and the one after
it warm from a fresh zygote; nothing half-written is ever listed."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading

import pytest

from odoo_stack_ops import warm_start
from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect, api_session
from tests.checks import http_endpoint, wait_until
from tests.faults import S3FaultProxy
from tests.fixtures.stack import write_tree
from tests.test_workers import TERMINAL, assert_whole, manifest_keys

DUMP_PART = lambda m, p: m == "PUT" and "/db/" in p and "partNumber=" in p  # noqa: E731


def test_the_zygote_key_ignores_per_run_variables_and_follows_settings_and_interpreter_variables():
    base = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "STACK_OPS_FILE": "/a.yaml"}
    key = warm_start.zygote_key(base)
    assert warm_start.zygote_key({**base, "PREFECT__FLOW_RUN_ID": "x", "STACK_OPS_FILE": "/b.yaml"}) == key
    assert warm_start.zygote_key({**base, "PREFECT_LOGGING_LEVEL": "DEBUG"}) != key
    assert warm_start.zygote_key({**base, "PREFECT_API_URL": "http://127.0.0.1:4201/api"}) != key
    assert warm_start.zygote_key({**base, "PYTHONPATH": "/elsewhere"}) != key  # another sys.path: another zygote
    assert warm_start.zygote_key({**base, "PYTHONDONTWRITEBYTECODE": "1"}) != key


def test_the_socket_directory_must_be_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = warm_start.runtime_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o770)  # another user of the group could reach the zygote (it holds the worker's secrets)
    with pytest.raises(PermissionError, match="not a private directory"):
        warm_start.runtime_dir()


def test_the_zygote_freezes_what_it_preloaded_and_shares_the_api_clients_tls_context():
    """Forked runs must not collect (and so copy) the zygote's objects, nor parse the CA bundle per API client."""
    code = ("import gc, sys; from odoo_stack_ops import prefect_tls, warm_start; warm_start.preload(); "
            "import prefect.client.orchestration as o; "
            "print(gc.get_freeze_count(), len(gc.get_objects()), isinstance(o.ssl, prefect_tls.SharedContexts))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120,
                          check=True)
    frozen, unfrozen, shared = proc.stdout.split()
    assert int(frozen) > 100_000 and int(unfrozen) < int(frozen) / 10  # Prefect, boto3, the flows: all frozen
    assert shared == "True"


def test_api_calls_retry_the_servers_service_unavailable_as_prefects_client_does():
    """A busy server answers 503 "Service Unavailable" to a request it did not apply (a CI run's create_flow_run
    failed so); Prefect's client retries 429/502/503, and the tests' and bench's calls to the API do too."""
    answers = [503, 503, 201, 500]
    seen: list[bytes] = []

    def api(_method: str, _path: str, body: bytes) -> tuple[int, bytes]:
        seen.append(body)
        return answers.pop(0), b'{"exception_message":"Service Unavailable"}'

    with http_endpoint(api) as base:
        url = f"{base}/api/deployments/x/create_flow_run"
        assert api_session().post(url, json={}, timeout=10).status_code == 201
        assert seen == [b"{}"] * 3  # the same request, sent again
        assert api_session().post(url, json={}, timeout=10).status_code == 500  # a real error is not retried
        assert len(seen) == 4


def test_api_calls_never_reuse_a_connection_the_server_may_be_closing():
    """A server closes a connection idle for its keep-alive time; a request it receives on it as it does so is reset
    unread (a CI run's create_flow_run failed so), and a POST so reset cannot be retried: it may have been applied.
    This server resets every request sent on a connection it has already answered on, as uvicorn does in that
    window; it honours `Connection: close` by saying so and closing, as uvicorn does."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536)
                close = b"connection: close" in head.lower()
                answered.append(head.split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n"
                             + (b"connection: close\r\n" if close else b"") + b"\r\n{}")
                if not close and conn.recv(1, socket.MSG_PEEK):  # the next request, on this connection: reset
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    threading.Thread(target=serve, daemon=True).start()
    try:
        session, url = api_session(), f"http://127.0.0.1:{listener.getsockname()[1]}/api/deployments/x/create_flow_run"
        assert [session.post(url, json={}, timeout=10).status_code for _ in range(3)] == [201] * 3
        assert answered == [b"POST /api/deployments/x/create_flow_run HTTP/1.1"] * 3
    finally:
        listener.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_warm_runs_complete_cancel_crash_and_restart_on_changed_code(stack_tree, s3, bucket, mattermost, tmp_path):
    proxy = S3FaultProxy(s3.endpoint)
    stack_file = write_tree({**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}},
                            tmp_path / "stack.yaml")
    env = {"STACK_OPS_FILE": stack_file, "MATTERMOST_WEBHOOK_URL": mattermost.url}
    prefect = LocalPrefect(tmp_path / "prefect")
    worker_log = prefect.home / "worker.log"
    before = manifest_keys(s3, bucket)
    try:
        prefect.start()
        prefect.python("-m", "deployments.setup", extra_env=env)
        prefect.cli("--no-prompt", "deploy", "--name", "nightly", extra_env=env)
        prefect.start_worker("ops-process", env)
        deployment = prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly", timeout=10).json()["id"]

        def run() -> str:
            response = prefect.http.post(f"{prefect.api}/deployments/{deployment}/create_flow_run", json={}, timeout=10)
            assert response.status_code == 201, response.text
            return response.json()["id"]

        def read(run_id: str) -> dict:
            return prefect.http.get(f"{prefect.api}/flow_runs/{run_id}", timeout=10).json()

        def finished(run_id: str) -> str:
            return wait_until(lambda: read(run_id)["state"]["type"] in TERMINAL and read(run_id)["state"]["type"],
                              300, f"flow run {run_id} finished", 0.5)

        def forked(run_id: str) -> tuple[int, int]:
            found = wait_until(lambda: re.search(rf"flow run {run_id}: process (\d+) forked from zygote (\d+)",
                                                 worker_log.read_text()), 120, f"flow run {run_id} forked", 0.2)
            return int(found[1]), int(found[2])

        # two runs, one zygote, two processes
        first = run()
        assert finished(first) == "COMPLETED"
        second = run()
        assert finished(second) == "COMPLETED"
        (pid1, zygote), (pid2, zygote2) = forked(first), forked(second)
        assert zygote2 == zygote and pid1 != pid2 and alive(zygote)
        assert "found in sys.modules" not in worker_log.read_text()  # runpy's warning about the preloaded engine

        # SIGTERM to its launcher (what the worker's graceful kill sends): forwarded, the run ends on its own terms
        held = proxy.hold(DUMP_PART)
        termed = run()
        wait_until(held.reached.is_set, 120, "the run's first dump part at S3", 0.2)
        pid, _ = forked(termed)
        launcher = int(wait_until(lambda: read(termed).get("infrastructure_pid"), 30, "the run's pid").rsplit(":", 1)[-1])
        os.kill(launcher, signal.SIGTERM)
        held.release.set()  # the engine's signal handler runs once its thread is back in Python
        assert finished(termed) == "CRASHED"
        # the engine itself reported it: with the signal not forwarded, the launcher would die of it and the run
        # would be SIGKILLed from its socket watch, leaving the worker to report "exited with status code"
        assert read(termed)["state"]["message"] == "Execution was aborted by a termination signal."
        wait_until(lambda: not alive(pid), 30, "the terminated run's process gone", 0.2)

        # cancelled while its dump's first part is held at S3: Cancelled, its process gone
        held = proxy.hold(DUMP_PART)
        doomed = run()
        wait_until(held.reached.is_set, 120, "the run's first dump part at S3", 0.2)
        pid, _ = forked(doomed)
        prefect.http.post(f"{prefect.api}/flow_runs/{doomed}/set_state", timeout=10,
                      json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}).raise_for_status()
        assert finished(doomed) == "CANCELLED"
        wait_until(lambda: not alive(pid), 30, "the cancelled run's process gone", 0.2)
        held.release.set()

        # the project's code changed: the next run starts cold, and the one after it from a fresh zygote
        touched = PROJECT / "flows" / "__init__.py"
        os.utime(touched)
        cold = run()
        assert finished(cold) == "COMPLETED"
        assert re.search(r"warm start: cold \(the code or environment changed", worker_log.read_text())
        assert not re.search(rf"flow run {cold}: process", worker_log.read_text())
        wait_until(lambda: not alive(zygote), 30, "the stale zygote gone (its runs ended)", 0.2)
        warm = run()
        assert finished(warm) == "COMPLETED"
        zygote2 = forked(warm)[1]
        assert zygote2 != zygote

        # its launcher killed (the run's process for the worker): the forked run dies with it, the run is Crashed
        held = proxy.hold(DUMP_PART)
        killed = run()
        wait_until(held.reached.is_set, 120, "the run's first dump part at S3", 0.2)
        pid, _ = forked(killed)
        assert warm_start.zygote_pids(prefect.api) == [zygote2]  # its forked run, which shares its /proc command line, is not one
        launcher = int(wait_until(lambda: read(killed).get("infrastructure_pid"), 30, "the run's pid").rsplit(":", 1)[-1])
        assert launcher != pid
        os.kill(launcher, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 30, "the forked run gone with its launcher", 0.2)
        held.release.set()
        assert finished(killed) == "CRASHED"
        assert "SIGKILL" in read(killed)["state"]["message"]
        # four nights published whole; the terminated, cancelled and killed ones left nothing listed
        assert len(manifest_keys(s3, bucket) - before) == 4
        assert_whole(s3, bucket, manifest_keys(s3, bucket) - before)
        prefect.stop()  # and with it the zygote its runs forked from (else it would wait out its idle time)
        wait_until(lambda: not alive(zygote2), 10, "the zygote stopped with its server", 0.2)
    finally:
        prefect.stop()
        proxy.stop()
