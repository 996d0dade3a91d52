"""Fault injectors on real sockets: an HTTP proxy that answers chosen S3 requests with errors or holds one
(so a test can kill the client while that request is in flight), and a TCP proxy that cuts every connection once
a byte budget is spent."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from prefect.settings import PREFECT_API_URL

from tests.checks import wait_until


@dataclass
class Hold:
    """The first request matching `match` is held: before it reaches S3, or (forward) once S3 has done it but
    before the client hears so. `reached` is set while it is held; `release` lets it go."""

    match: Callable[[str, str], bool]
    forward: bool
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    request: tuple[str, str] | None = None


class S3FaultProxy:
    """Forwards to an S3 endpoint; `fail(match, status, code, times)` answers matching requests with an error,
    `hold(match, forward)` stops the first matching one until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlparse(upstream)
        self.rules: list[list] = []
        self.holds: list[Hold] = []
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append((self.command, self.path))
                for rule in outer.rules:
                    match, status, code, left = rule
                    if left > 0 and match(self.command, self.path):
                        rule[3] -= 1
                        data = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                held = outer._take_hold(self.command, self.path)
                if held and not held.forward:
                    held.reached.set()
                    held.release.wait()
                    self.close_connection = True  # the client was killed meanwhile: nothing reaches S3
                    return
                conn = http.client.HTTPConnection(outer.upstream.hostname, outer.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if held:
                    held.reached.set()
                    held.release.wait()
                with contextlib.suppress(OSError):  # a killed client is gone
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, match: Callable[[str, str], bool], status: int = 500, code: str = "InternalError",
             times: int = 1) -> None:
        self.rules.append([match, status, code, times])

    def hold(self, match: Callable[[str, str], bool], forward: bool = False) -> Hold:
        held = Hold(match, forward)
        with self.lock:
            self.holds.append(held)
        return held

    def _take_hold(self, method: str, path: str) -> Hold | None:
        with self.lock:
            for held in self.holds:
                if held.request is None and held.match(method, path):
                    held.request = (method, path)
                    return held
        return None

    def stop(self) -> None:
        for held in self.holds:
            held.release.set()
        self.server.shutdown()
        self.server.server_close()


class TcpCutProxy:
    """Forwards TCP to (host, port), or to a unix socket (`unix_path`: the Engine API's); after `cut_after` bytes
    have gone downstream it drops every connection, once."""

    def __init__(self, host: str = "", port: int = 0, unix_path: str | None = None) -> None:
        self.target = (host, port)
        self.unix_path = unix_path
        self.cut_after: int | None = None
        self.sent = 0
        self.cuts = 0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.unix_path is not None:
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.unix_path)
            else:
                upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if downstream:
                    with self.lock:
                        self.sent += len(data)
                        cut = self.cut_after is not None and self.sent >= self.cut_after
                    if cut:
                        self.cut()
                        return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self.lock:
            self.cut_after = None
            self.cuts += 1
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def stop(self) -> None:
        self.listener.close()
        self.cut()


def run_flow(code: str, stack_file: str, *, stderr: int = subprocess.PIPE,
             env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`code` (a flow call naming `stack_file`) in a process of its own session, against the harness's Prefect
    API (`env` added to the environment); stderr piped (text) unless told otherwise. SIGUSR1 makes it print every
    thread's stack (`ended` asks for it when the run hangs)."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
           **(env or {})}
    code = "import faulthandler, signal; faulthandler.register(signal.SIGUSR1)\n" + code.format(stack_file=repr(stack_file))
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def ended(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The run's stderr once it ended; when it has not within `timeout`, the test fails with where each of its
    threads was (a hang in CI is then readable from the log) and the run's session is killed."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        err = proc.communicate()[1]
        raise AssertionError(f"{what} had not ended after {timeout:g} s; its threads, then its log:\n{err[-8000:]}") from None


def cancel_while_held(proc: subprocess.Popen[str], held: Hold, what: str) -> None:
    """SIGTERM (a cancel) once `held` holds the run's request: the run must end of it well within Prefect's 30 s
    grace (after which it is SIGKILLed, skipping its guards), having said so."""
    wait_until(lambda: held.reached.is_set() or proc.poll() is not None, 120, what, 0.2)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = ended(proc, 60, f"{what}, cancelled,")
    took = time.monotonic() - sent
    assert proc.returncode == -signal.SIGTERM and "aborted by a termination signal" in err, err[-3000:]
    assert took < 20, f"{took:.1f} s after the SIGTERM: Prefect SIGKILLs a cancelled run after 30 s"


def stop_run(proc: subprocess.Popen[str], held: Hold | None, proxy: Any) -> None:
    """The end of a test around `proc`: the held request let go, the run's session killed if still there."""

    if held is not None:
        held.release.set()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proxy.stop()
