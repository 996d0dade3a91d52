"""Thread pools for network transfers that a cancel does not wait for.

A cancel reaches a run as SIGTERM, which Prefect raises in the main thread (TerminationSignal); the guards
around an upload or a download then abort it and re-raise, and the guards above them clean up (odoo-core
started again, a plaintext spool removed). A ThreadPoolExecutor's threads are joined by `shutdown(wait=True)`
and again at interpreter exit, so a thread blocked in a read that does not come back (a dead connection:
botocore waits read_timeout on each of its attempts, minutes) held every guard and the exit until Prefect's
grace ran out and SIGKILL skipped what the guards had left to do. Here the threads are daemon threads, and
`shutdown` waits for the calls still running only as long as it is told.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
GIVE_UP_S = 5.0  # how long an abort waits for transfers already under way before it leaves them behind


class DaemonPool:
    """`submit(fn, *args)` → Future, as ThreadPoolExecutor's, on at most `workers` daemon threads."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers, self.name = workers, name
        self._queue: queue.SimpleQueue[tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue())
        self._threads: list[threading.Thread] = []
        self._unfinished: set[cf.Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any) -> cf.Future[T]:
        fut: cf.Future[T] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"pool {self.name} is shut down")
            self._unfinished.add(fut)
            self._queue.put((fut, fn, args))
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
        fut.add_done_callback(self._finished)
        return fut

    def _finished(self, fut: cf.Future[Any]) -> None:
        with self._lock:
            self._unfinished.discard(fut)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            _call(*item)

    def shutdown(self, wait_s: float | None = None) -> bool:
        """Cancel the calls not started yet and wait for the running ones, at most `wait_s` seconds (None: until
        they end). True when none is left running; those that are end on their own, nothing joins them."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
            unfinished = list(self._unfinished)
        for fut in unfinished:
            fut.cancel()  # only those not started
        _done, running = cf.wait(unfinished, timeout=wait_s)
        return not running


def in_background(fn: Callable[..., T], /, *args: Any) -> cf.Future[T]:
    """`fn(*args)` on a daemon thread of its own, in a copy of the caller's context: a Prefect task called so is a
    task run of the caller's flow run, as `.submit` makes one, but Prefect's task runner, which joins its threads
    when the flow run ends, does not hold a cancelled run on it."""
    fut: cf.Future[T] = cf.Future()
    threading.Thread(target=_call, args=(fut, contextvars.copy_context().run, (fn, *args)), daemon=True,
                     name=getattr(fn, "name", "background")).start()
    return fut


def _call(fut: cf.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    if not fut.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
        fut.set_exception(exc)
    else:
        fut.set_result(result)
