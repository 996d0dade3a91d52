"""Test helpers shared by the integration tests: waiting for a condition, and what Prefect recorded of a run."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, what: str = "the condition", every: float = 0.05) -> T:
    """Poll `pred` until it returns something truthy (returned) or `timeout` seconds pass (AssertionError naming
    `what`): a condition with a deadline instead of a sleep that guesses how long things take."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@contextlib.contextmanager
def http_endpoint(answer: Callable[[str, str, bytes], tuple[int, bytes]],
                  tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A real HTTP (or, with `tls`, HTTPS) endpoint on 127.0.0.1: each request is answered with
    `answer(method, path, body)` -> (status, JSON body). Yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            status, body = answer(self.command, self.path,
                                  self.rfile.read(int(self.headers.get("content-length") or 0)))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def task_runs(flow_run_id: UUID) -> dict[str, list[tuple[Any, list[str]]]]:
    """The flow run's task runs by task name, each with the names of the states it went through, in order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: dict[str, list[tuple[Any, list[str]]]] = {}
    with get_client(sync_client=True) as client:
        for run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))):
            states = sorted(client.read_task_run_states(run.id), key=lambda s: s.timestamp)
            runs.setdefault(run.name.rsplit("-", 1)[0], []).append((run, [s.name for s in states]))
    return runs
