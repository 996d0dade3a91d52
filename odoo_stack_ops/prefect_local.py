"""A local Prefect server and process worker, started and stopped by us (the demo and the end-to-end test)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.warm_start import stop_zygotes

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen[bytes] | None, signals: tuple[int, ...] = (signal.SIGTERM,),
               wait_s: float = 10, waits: tuple[float, ...] = ()) -> None:
    """Stop a process started with start_new_session: each signal in turn to its group, then SIGKILL.

    After each signal it waits `waits[i]` seconds when given, else `wait_s`."""
    if proc is None or proc.poll() is not None:
        return
    for i, sig in enumerate(signals):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=waits[i] if i < len(waits) else wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=wait_s)


def bytecode_missing(modules: tuple[str, ...] = ("prefect.flow_engine", "prefect.client.orchestration", "boto3",
                                                 "psycopg")) -> list[str]:
    """The modules with no compiled bytecode beside them: each flow run is a new interpreter, which compiles these
    from source again (`uv sync --compile-bytecode` writes it once; PYTHONDONTWRITEBYTECODE or a venv the worker's
    user cannot write otherwise keep it from ever being written)."""
    from importlib.util import cache_from_source, find_spec  # noqa: PLC0415

    return [m for m in modules if not Path(cache_from_source(find_spec(m).origin)).is_file()]  # type: ignore[union-attr,arg-type]


def prefect_bin() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def api_session() -> requests.Session:
    """HTTP to the server's API, retried as Prefect's own client does: the server answers 503 for errors a client
    may retry (a busy SQLite database says "locked"), and such a request changed nothing.

    One connection per request: the server closes a connection idle for its keep-alive time (5 s), and a request
    sent on it as it does so is reset with the server's read buffer unread: a POST so reset may have been applied or
    not, so it cannot be retried (a CI run's create_flow_run failed so after a 5 s wait between runs)."""
    session = requests.Session()
    session.headers["Connection"] = "close"
    retry = Retry(total=6, connect=3, read=0, status_forcelist=(429, 502, 503), allowed_methods=None,
                  backoff_factor=0.5, backoff_jitter=0.5, respect_retry_after_header=True, raise_on_status=False)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class LocalPrefect:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME, plus helpers to deploy and work.

    Its database is SQLite unless `server_env` names a PostgreSQL one (`PgCluster.prefect_server_env`); those
    settings reach the server process only, never a worker (a Docker worker hands its PREFECT_* settings to
    every flow-run container)."""

    def __init__(self, home: Path, port: int | None = None, server_env: dict[str, str] | None = None) -> None:
        self.home, self.port = home, port or free_port()
        self.server_env = server_env or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.http = api_session()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        return {"STACK_OPS_WARM_IDLE_S": "60",  # this server's warm-start zygote goes soon after its last run
                **os.environ, "PATH": path,  # the pool's command (prefect.yaml) runs this venv's python
                "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_EXTRA_LOGGERS": "odoo_stack_ops",
                "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PREFECT_CLI_COLORS": "false", **(extra or {})}

    def start(self, timeout: float = 90) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        self.server = subprocess.Popen(
            [prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(self.server_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise OpsError(f"prefect server exited early; see {self.home / 'server.log'}")
            try:
                if requests.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise OpsError(f"prefect server not healthy after {timeout:.0f} s; see {self.home / 'server.log'}")

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 600) -> str:
        """Run a prefect CLI command in the project directory; raise with its output when it fails."""
        proc = subprocess.run([prefect_bin(), *args], env=self.env(extra_env), cwd=PROJECT, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise OpsError(f"`prefect {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def python(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300) -> str:
        proc = subprocess.run([sys.executable, *args], env=self.env(extra_env), cwd=PROJECT, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise OpsError(f"`python {' '.join(args)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout + proc.stderr

    def start_worker(self, pool: str, extra_env: dict[str, str] | None = None) -> None:
        log = (self.home / "worker.log").open("ab")
        self.worker = subprocess.Popen([prefect_bin(), "worker", "start", "--pool", pool], env=self.env(extra_env),
                                       cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_worker(self) -> None:
        # an idle worker ignores SIGTERM and the first SIGINT: the second, a moment later, ends it
        stop_group(self.worker, (signal.SIGINT, signal.SIGINT, signal.SIGTERM), waits=(1.5, 10, 10))
        self.worker = None

    def stop(self) -> None:
        self.stop_worker()
        stop_zygotes(self.api)  # the warm-start zygote this server's runs forked from (workers started elsewhere too)
        stop_group(self.server, (signal.SIGTERM, signal.SIGINT))
        self.server = None
