"""The README's main job: `backup/nightly` end to end through a real Prefect server and worker.

With no real stack configured (no STACK_OPS_FILE, no DB_HOST) it starts the sandbox stack on this machine
first. Then: local Prefect server → deployments/setup → `prefect deploy --all` → process worker →
`prefect deployment run backup/nightly --watch` → where the backup landed and its verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.config import load_config
from odoo_stack_ops.prefect_local import LocalPrefect

if TYPE_CHECKING:
    from odoo_stack_ops.sandbox.stack import SandboxStack

log = logging.getLogger("odoo_stack_ops.demo")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Stopped(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM or SIGHUP); a BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_now(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def catch_stop_signals() -> None:
    """Turn each stop signal into `Stopped`, before any child starts.

    A job started in the background by a non-interactive shell inherits SIGINT ignored, and a service manager or
    a closed terminal sends SIGTERM or SIGHUP: each must run the same cleanup as Ctrl-C. Installing a handler also
    gives children the default SIGINT again (an ignored one is inherited, a handled one is not), which the Prefect
    worker needs to be stopped at all."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_now)


def stop_everything(prefect: LocalPrefect | None, sandbox: SandboxStack | None) -> None:
    """Stop what the demo started, in order, with further stop signals ignored so a second Ctrl-C cannot cut the
    cleanup short and leave half of it running."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if prefect is not None:
        with contextlib.suppress(Exception):  # the sandbox is stopped regardless
            prefect.stop()
    if sandbox is not None:
        sandbox.stop()


def run_demo(workdir: Path, keep: bool = False) -> int:
    real = bool(os.environ.get("STACK_OPS_FILE") or os.environ.get("DB_HOST"))
    sandbox: SandboxStack | None = None
    prefect: LocalPrefect | None = None
    env_extra: dict[str, str] = {}
    try:
        if real:
            say("using the configured stack (STACK_OPS_FILE / environment)")
        else:
            say("no stack configured: starting the local sandbox stack (PostgreSQL with TLS, sshd, podman "
                "Docker API with odoo-core/nginx-proxy/n8n/mattermost, S3 endpoint, Mattermost stand-in)…")
            from odoo_stack_ops.sandbox.stack import SandboxStack  # noqa: PLC0415 - only without a real stack

            t = time.monotonic()
            sandbox = SandboxStack(workdir / "sandbox")
            stack_file = sandbox.start()
            env_extra = {"STACK_OPS_FILE": str(stack_file), "MATTERMOST_WEBHOOK_URL": sandbox.mattermost.url}
            os.environ["STACK_OPS_FILE"] = str(stack_file)
            say(f"sandbox up in {time.monotonic() - t:.0f} s; stack file {stack_file}")
        cfg = load_config()
        # the server's own database: PostgreSQL in the sandbox's cluster, as in production (SQLite locks up under
        # a few workers and a UI left open with --keep); with a real stack, whatever the environment configures
        server_env = sandbox.pg.prefect_server_env() if sandbox is not None and sandbox.pg is not None else {}
        prefect = LocalPrefect(workdir / "prefect", server_env=server_env)
        t = time.monotonic()
        prefect.start()
        where = "PostgreSQL database `prefect` in the sandbox cluster" if server_env else "its configured database"
        say(f"Prefect server up in {time.monotonic() - t:.0f} s at {prefect.url} ({where})")
        prefect.python("-m", "deployments.setup", extra_env=env_extra)
        prefect.cli("--no-prompt", "deploy", "--all", extra_env=env_extra)
        say("deployed every flow in prefect.yaml; starting a process worker on pool ops-process")
        prefect.start_worker("ops-process", env_extra)
        t = time.monotonic()
        out = prefect.cli("deployment", "run", "backup/nightly", "--watch", "--watch-timeout", "1800",
                          extra_env=env_extra, timeout=1900)
        elapsed = time.monotonic() - t
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        run_url = f"{prefect.url}/runs/flow-run/{match.group(1)}" if match else prefect.url
        say(f"backup/nightly Completed {elapsed:.0f} s after `prefect deployment run`")
        bucket = spaces.Bucket.open(cfg.spaces)
        for database in cfg.backup.databases:
            ref = rs.list_manifests(bucket, database)[-1]
            m = rs.load_manifest(bucket, ref.key)
            say(f"\n{database}: manifest s3://{cfg.spaces.bucket}/{ref.key}")
            say(f"  dump      s3://{cfg.spaces.bucket}/{m.dump.key}  {m.dump.stored_bytes:,} bytes "
                f"(raw {m.dump.raw_bytes:,}), sha256 {m.dump.stored_sha256[:16]}…")
            say(f"  filestore {m.filestore.files} files, {m.filestore.new_objects} new in {m.filestore.packs} "
                f"pack(s), manifest {m.filestore.manifest_key}")
            verdict = "VERIFIED by restore into a scratch database" if m.verified else \
                f"NOT verified: {m.verification.error}"
            say(f"  verdict   {verdict}")
        say(f"\ndashboard: {run_url}")
        if keep:
            prefect.cli("deployment", "run", "report/weekly", "--watch", "--watch-timeout", "600",
                        extra_env=env_extra, timeout=700)
            say(f"weekly report (tables, charts, trend alarms): {prefect.url}/artifacts/key/ops-report")
            say("--keep: services stay up; press Ctrl-C (or send SIGTERM or SIGHUP) to stop them")
            while True:
                signal.pause()
        return 0
    except Stopped as stop:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            say(f"{stop}: stopping everything the demo started…")
        raise
    finally:
        stop_everything(prefect, sandbox)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the Prefect server and sandbox running")
    parser.add_argument("--workdir", help="where the sandbox and Prefect keep their state (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="odoo-stack-ops-demo-"))
    catch_stop_signals()
    try:
        return run_demo(workdir, keep=args.keep)
    except Stopped as stop:
        with contextlib.suppress(OSError):
            say("stopped")
        return 128 + stop.signum
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
