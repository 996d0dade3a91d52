"""Warm flow-run starts for the `ops-process` pool (its `command`): `python -m odoo_stack_ops.warm_start`.

A cold `python -m prefect.engine` spends ~1.6 s of CPU importing Prefect and the flows before a run does anything:
twenty stacks' nightly runs, and every stack's health sweeps, pay it each time (bench/fleet.py). Here a zygote
imports them once and each run is a fork of it. This process stays the run's process for the worker (its pid, its
stdio, its exit status): it hands the zygote its environment, working directory and stdio, forwards SIGTERM and
SIGINT to the forked run and ends as the run ends. Killed itself, it takes the run along: the run watches this
process's socket and kills its own process group when it closes, as a cold run dies with its machine.

Whenever the zygote cannot serve a run exactly as a cold start would, this process becomes the cold start (exec):
the zygote is not there or fails to start, the project's code or environment changed since it imported them (it
then exits once its runs end), or STACK_OPS_WARM_START=0. Zygotes are keyed by interpreter, PYTHON* variables and
PREFECT_* settings (read at import); one lives while runs come, and exits after IDLE_S without one.

This module's launcher side imports only the standard library: it costs ~30 ms per run."""

from __future__ import annotations

import array
import contextlib
import fcntl
import gc
import hashlib
import importlib
import json
import os
import pkgutil
import runpy
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

IDLE_S = 900  # STACK_OPS_WARM_IDLE_S overrides (the test bed's servers come and go)
START_TIMEOUT_S = 60
# Per-run variables the worker sets (flow run id, control channel, deployment name): never part of the key
PER_RUN_PREFIX = "PREFECT__"


def say(message: str) -> None:
    """One line in the run's output (the worker streams it): where this run's process came from."""
    sys.stderr.write(f"warm start: {message}\n")
    sys.stderr.flush()


def zygote_key(env: dict[str, str]) -> str:
    """Runs whose interpreter, PYTHON* variables (path, bytecode, hash seed...) and PREFECT_* settings (read at
    import) match share a zygote."""
    settings = sorted((k, v) for k, v in env.items()
                      if k.startswith(("PREFECT_", "PYTHON")) and not k.startswith(PER_RUN_PREFIX))
    return hashlib.sha256(json.dumps([sys.executable, settings]).encode()).hexdigest()[:16]


def runtime_dir() -> Path:
    """A directory only this user can enter (the zygote holds the worker's environment: its secrets too)."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp")  # noqa: S108 - a private directory, checked below
    path = base / f"odoo-stack-ops-warm-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a private directory of this user")
    return path


def cold(reason: str) -> None:
    """Become the cold start: the same command the pool ran before warm starts existed."""
    say(f"cold ({reason})")
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])  # noqa: S606 - fixed argv


def connect(path: Path, zygote: subprocess.Popen[bytes] | None) -> socket.socket | None:
    """Connect to the zygote at `path`, waiting while one is importing (ours, or another launcher's that won the
    start); None when none is serving or starting."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
        starting = (zygote is not None and zygote.poll() is None) or locked(path)
        if not starting or time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def locked(path: Path) -> bool:
    """Whether a zygote holds the key's lock (it is importing, or serving)."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def start_zygote(path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PER_RUN_PREFIX)}
    return subprocess.Popen([sys.executable, "-m", "odoo_stack_ops.warm_start", "--zygote", str(path)], env=env,
                            cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def read_line(sock: socket.socket) -> dict | None:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def launch() -> None:
    """The pool's command: run this flow run forked from a warm zygote, or cold."""
    if os.environ.get("STACK_OPS_WARM_START", "1") == "0":
        cold("STACK_OPS_WARM_START=0")
    try:
        path = runtime_dir() / f"{zygote_key(dict(os.environ))}.sock"
        sock = connect(path, None) or connect(path, start_zygote(path))
    except OSError as exc:
        cold(f"no zygote: {exc}")
    if sock is None:
        cold("the zygote did not start")
    request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]}).encode() + b"\n"
    run: dict[str, int] = {}  # the forked run's pid, once known; a signal that comes first waits for it
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if "pid" not in run:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(run["pid"], signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    try:
        sent = socket.send_fds(sock, [request], [0, 1, 2])
        if sent < len(request):  # (an empty send after the zygote answered and closed would fail: EPIPE)
            sock.sendall(request[sent:])
        answer = read_line(sock)
    except (OSError, ValueError) as exc:
        answer = {"cold": f"the zygote did not answer: {exc}"}
    if not answer or "pid" not in answer:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
        if pending:  # asked to stop before anything ran
            sys.exit(128 + pending[0])
        cold((answer or {}).get("cold", "the zygote closed the connection"))
    run["pid"] = answer["pid"]
    say(f"flow run {os.environ.get('PREFECT__FLOW_RUN_ID')}: process {run['pid']} forked from zygote "
        f"{answer['zygote']}")
    for signum in pending:
        forward(signum, None)
    end = read_line(sock)
    if end is None:  # the zygote died with the run still going: stop the run too, and say so
        forward(signal.SIGKILL, None)
        say("the zygote ended before the run reported its end")
        sys.exit(1)
    status = end["status"]
    if os.WIFSIGNALED(status):  # die as the run died: the worker reads the same signal a cold run would give
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status))


def zygote_pids(api_url: str | None = None) -> list[int]:
    """The live zygotes' pids; with `api_url`, only those serving runs of that Prefect API. A forked run keeps its
    zygote's command line and start-up environment in /proc: it is told apart by its parent, a zygote."""
    needle = f"\0PREFECT_API_URL={api_url}\0".encode()
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if (proc.name.isdigit() and b"warm_start\0--zygote" in (proc / "cmdline").read_bytes()
                    and (api_url is None or needle in b"\0" + (proc / "environ").read_bytes())):
                found[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return [pid for pid, parent in found.items() if parent not in found]


def stop_zygotes(api_url: str) -> list[int]:
    """SIGTERM the zygotes serving runs of the Prefect API at `api_url` (their runs go on): for whoever stops that
    server, since a zygote otherwise waits out its idle time. Returns their pids."""
    stopped = zygote_pids(api_url)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return stopped


# ---- the zygote: runs only in its own process ----

def fingerprint() -> tuple[int, int]:
    """The code a run would import: the project's Python files and the environment's site-packages (an install
    or removal changes that directory). A zygote that no longer matches stops serving."""
    import prefect  # noqa: PLC0415 - the zygote's imports, never the launcher's

    import odoo_stack_ops  # noqa: PLC0415

    root = Path(odoo_stack_ops.__file__).resolve().parents[1]
    files = [p for d in ("odoo_stack_ops", "flows", "tasks", "deployments") for p in (root / d).rglob("*.py")]
    site = Path(prefect.__file__).resolve().parents[1]
    stats = sorted((str(p), st.st_mtime_ns, st.st_size) for p in files for st in (p.stat(),))
    return hash(tuple(stats)), site.stat().st_mtime_ns


def preload() -> None:
    """What every cold run imports first: the engine, and every flow module (their imports: boto3, psycopg...);
    what each run would make again (botocore's S3 model, the API clients' TLS context). Then every object is
    frozen: a run's garbage collections, and its interpreter's exit, leave the zygote's objects alone instead of
    touching (and copying) every page of them (measured: a forked run's exit 0.68 → 0.12 CPU-s)."""
    import flows  # noqa: PLC0415 - the zygote's imports, never the launcher's

    for name in ("prefect.engine", "prefect.flow_engine", "prefect._internal.metrics", "prefect.deployments.steps"):
        importlib.import_module(name)
    for info in pkgutil.iter_modules(flows.__path__, "flows."):
        importlib.import_module(info.name)
    importlib.import_module("odoo_stack_ops.backup.spaces").warm()
    importlib.import_module("odoo_stack_ops.prefect_tls").share_client_contexts()
    gc.collect()
    gc.freeze()


class Zygote:
    """Imports once, then forks one run per request and reports each run's wait status to its launcher."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[int, socket.socket] = {}
        self.lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.listener: socket.socket | None = None
        self.wake_r, self.wake_w = os.pipe()
        self.idle_s = float(os.environ.get("STACK_OPS_WARM_IDLE_S", IDLE_S))

    def serve(self) -> None:
        for _ in range(20):  # a launcher probing the lock holds it for microseconds; a zygote holds it for good
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            return  # another launcher's zygote for the same key is starting or serving
        preload()
        self.code = fingerprint()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        last = time.monotonic()
        while self.listener or self.runs:
            watched = [self.wake_r, *([self.listener] if self.listener else [])]
            ready, _, _ = select.select(watched, [], [], 5)
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
            self.reap()
            if self.listener and self.listener in ready:
                conn, _ = self.listener.accept()
                if not self.fork(conn):
                    self.stop_serving()  # stale: this launcher starts cold; the runs still going end here
                last = time.monotonic()
            if self.runs:
                last = time.monotonic()
            elif self.listener and time.monotonic() - last > self.idle_s:
                self.stop_serving()

    def reap(self) -> None:
        while self.runs:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return
            conn = self.runs.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"status": status}).encode() + b"\n")
                conn.close()

    def stop_serving(self) -> None:
        """No more runs from here: the socket goes and the lock is free, so a fresh zygote can start at once."""
        if self.listener is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == os.fstat(self.listener.fileno()).st_ino:
                self.path.unlink()
        self.listener.close()
        self.listener = None
        os.close(self.lock)

    def fork(self, conn: socket.socket) -> bool:
        """One launcher's request: fork its run, or answer cold. False when this zygote is stale."""
        fds: list[int] = []
        reason, stale = "", False
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            uid = array.array("i", creds)[1]
            conn.settimeout(10)
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            while data and not data.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    break
                data += more
            request = json.loads(data)
            conn.settimeout(None)
            if uid != os.getuid():
                reason = "a request from another user"
            elif len(fds) != 3:
                reason = "stdio not passed"
            elif fingerprint() != self.code:
                reason, stale = "the code or environment changed since the zygote imported it", True
            elif threading.active_count() != 1:
                reason, stale = "the zygote has threads: forking it is unsafe", True
        except (OSError, ValueError) as exc:
            reason = f"bad request: {exc}"
        if reason:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"cold": reason}).encode() + b"\n")
            conn.close()
            for fd in fds:
                os.close(fd)
            return not stale
        pid = os.fork()
        if pid == 0:
            self.become_run(conn, fds, request)
        for fd in fds:
            os.close(fd)
        self.runs[pid] = conn
        with contextlib.suppress(OSError):  # a launcher already gone: its run sees that too, and ends
            conn.sendall(json.dumps({"pid": pid, "zygote": os.getpid()}).encode() + b"\n")
        return True

    def become_run(self, conn: socket.socket, fds: list[int], request: dict) -> None:
        """In the forked child: shed the zygote (its socket, lock, other runs), take the launcher's stdio,
        environment and directory, and run prefect.engine as `python -m` would; exits like a cold run (atexit
        handlers run: Prefect's log and event flushes)."""
        os.setsid()  # its own process group: a kill of it takes its children, never the zygote
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.listener is not None:
            self.listener.close()
        for other in self.runs.values():
            other.close()
        for fd in (self.lock, self.wake_r, self.wake_w):
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]
        sys.argv = [sys.argv[0], *request["argv"]]

        def watch() -> None:  # the launcher gone (killed with its worker): the run goes too
            with contextlib.suppress(OSError):
                while conn.recv(1):
                    pass
            os.killpg(0, signal.SIGKILL)

        threading.Thread(target=watch, name="warm-start-launcher-watch", daemon=True).start()
        # runpy warns that prefect.engine is already imported (the zygote preloaded it): intended, and it is run
        # as __main__ afresh, as `python -m` would; the warning would only add a line to every run's output
        warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning)
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        sys.exit(0)


def main() -> None:
    if sys.argv[1:2] == ["--zygote"]:
        Zygote(Path(sys.argv[2])).serve()
    else:
        launch()


if __name__ == "__main__":
    main()
