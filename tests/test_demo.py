"""The demo a newcomer trusts: the sandbox it starts is all green, and `--keep` stops everything it started on
SIGTERM (what a background job, a service manager or a closed terminal sends; SIGINT is ignored there)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from odoo_stack_ops.backup import manifest as mf

PROJECT = Path(__file__).resolve().parent.parent

def test_the_verification_row_shows_what_it_restored():
    """The backup artifact's verification row: the restored dump's size and rate, never None where one exists."""
    from tests.test_backup_pure import _manifest

    mib = 1024 * 1024
    doc = _manifest()
    doc = doc.model_copy(update={"dump": doc.dump.model_copy(update={"stored_bytes": 10 * mib,
                                                                      "raw_bytes": 30 * mib})})
    row = mf.summary_rows(doc)[2]
    assert row == {"item": "verification", "key": "ok", "size_mib": 10.0, "raw_mib": 30.0, "seconds": 2.5,
                   "mib_per_s": 12.0}
    skipped = mf.summary_rows(doc.model_copy(update={"verification": mf.Verification(skipped=True)}))[2]
    assert (skipped["size_mib"], skipped["raw_mib"], skipped["mib_per_s"]) == (None, None, None)


def publish_verified_backups(stack_file: str) -> None:
    from odoo_stack_ops.backup.spaces import Bucket
    from odoo_stack_ops.config import load_config
    from tests.test_deadman import publish

    cfg = load_config(stack_file)
    for database in cfg.backup.databases:
        publish(Bucket.open(cfg.spaces), database, datetime.now(UTC) - timedelta(hours=1), verified=True)


@pytest.mark.integration
@pytest.mark.slow
def test_a_fresh_sandbox_sweep_is_all_green(prefect_harness, tmp_path):
    from flows.health import health_sweep
    from flows.log_shipping import log_shipping
    from odoo_stack_ops.sandbox.stack import SandboxStack

    sandbox = SandboxStack(tmp_path / "sandbox")
    try:
        stack_file = sandbox.start()
        publish_verified_backups(str(stack_file))  # else the dead-man's switch rightly fails: no backup yet
        log_shipping(stack_file=str(stack_file))  # and: logs never shipped
        out = health_sweep(stack_file=str(stack_file))
    finally:
        sandbox.stop()
    rows = {r["check"]: r for r in out["results"]}
    services = ("odoo-core", "nginx-proxy", "n8n", "mattermost")
    assert {f"http.{s}" for s in services} | {f"container.{s}" for s in services} <= set(rows)
    assert {n: (r["status"], r["value"]) for n, r in rows.items() if r["status"] != "ok"} == {}
    assert out["notices"] == []


def _lines_until(proc, pattern: str, timeout: float, logs: Path | None = None) -> list[str]:
    """The demo's output lines up to the first holding `pattern`; fails with the output when it never comes."""
    seen: list[str] = []
    found, ended = threading.Event(), threading.Event()

    def read() -> None:
        for raw in proc.stdout:
            seen.append(raw.rstrip("\n"))
            if pattern in raw:
                found.set()
                break
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    ended.wait(timeout)
    tails = "".join(f"\n--- {log} (tail):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    for log in sorted((logs or Path("/nonexistent")).glob("*.log")))
    assert found.is_set(), f"no {pattern!r} in {timeout:.0f} s; the demo said:\n" + "\n".join(seen[-40:]) + tails
    return seen


def _own_processes(marker: str, paths: list[str]) -> list[str]:
    """Processes carrying the demo's environment marker, or naming one of its directories on their command line
    (postgres and sshd by their data/config paths, conmon by the podman storage)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if marker.encode() in environ or any(p in cmdline for p in paths):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
@pytest.mark.slow
def test_keep_stops_everything_it_started_on_sigterm(tmp_path):
    workdir = tmp_path / "demo"
    marker = f"demo-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("STACK_OPS_FILE", "DB_HOST") and not k.startswith("PREFECT_")}
    env["ODOO_STACK_OPS_TEST_MARK"] = marker
    # as a background job is started: its own session, no terminal, SIGINT ignored
    argv = [sys.executable, "-m", "odoo_stack_ops.demo", "--keep", "--workdir", str(workdir)]
    proc = subprocess.Popen(["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = "\n".join(_lines_until(proc, "press Ctrl-C", timeout=400, logs=workdir / "prefect"))
        tree = yaml.safe_load(Path(re.search(r"stack file (\S+)", out).group(1)).read_text())
        prefect_port = int(re.search(r"Prefect server up in \d+ s at http://127\.0\.0\.1:(\d+)", out).group(1))
        podman_base = str(Path(tree["docker"]["remote_socket"]).parent)
        ports = {"postgres": tree["database"]["port"], "sshd": tree["ssh"]["port"],
                 "s3": int(tree["spaces"]["endpoint"].rsplit(":", 1)[1]), "prefect": prefect_port,
                 **{f"container {s}": c["ports"][0] for s, c in tree["containers"].items()}}
        paths = [str(workdir), podman_base]
        # the probes see what the demo started, so "nothing left" below is not "nothing ever seen"
        assert {name for name, port in ports.items() if not _listening(port)} == set()
        running = _own_processes(marker, paths)
        assert any("conmon" in p for p in running) and any("prefect" in p and "worker" in p for p in running)

        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _own_processes(marker, paths) == []
    assert {name for name, port in ports.items() if _listening(port)} == set()
    assert not Path(podman_base).exists()  # its storage (and every container in it) went with the service
    assert took < 60
