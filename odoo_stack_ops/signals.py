"""The stops a run must finish its guards after: a cancel, a stop of the worker, one landing in a finalizer.

A cancel reaches a run as SIGTERM (Prefect raises TerminationSignal); a stop of the worker's unit as SIGINT
(systemd's KillSignal, sent to every process of the unit, so the run gets it directly and again forwarded by the
warm start: KeyboardInterrupt, twice). Both are STOPS to the guards that put the stack back (odoo-core started,
the previous database swapped back, a rollback); `finishing()` keeps a further signal from cutting such a guard
short, until Prefect's SIGKILL after its grace.

A cancel that lands in a finalizer is delivered again, not lost.

A cancel reaches a run as one SIGTERM, which Prefect's handler turns into TerminationSignal raised in the main
thread at its next bytecode. When that bytecode belongs to a finalizer (a `__del__` or weakref callback the
garbage collector happens to run), Python cannot raise there: it prints "Exception ignored in" and drops the
exception. The run then goes on as if never cancelled, a dump keeps waiting on pg_dump, and the worker SIGKILLs
it after its grace, skipping every guard (an upgrade's odoo-core stays stopped behind its stand-by). Seen in CI
as a cancelled upgrade that hung until killed, its stderr ending in `TerminationSignal: ` (the unraisable
hook's format). Here the hook sends the same signal to the main thread again a moment later, outside the
finalizer, where it interrupts a blocking read as the first one would have.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prefect.exceptions import TerminationSignal

AGAIN_AFTER_S = 0.05
STOPS = (TerminationSignal, KeyboardInterrupt)
_previous = sys.unraisablehook


def _hook(unraisable: Any) -> None:
    exc = unraisable.exc_value
    if isinstance(exc, TerminationSignal):
        again = threading.Timer(AGAIN_AFTER_S, signal.pthread_kill,
                                (threading.main_thread().ident, getattr(exc, "signal", signal.SIGTERM)))
        again.daemon = True
        again.start()
    _previous(unraisable)


def keep_cancels() -> None:
    """Install the hook once per process (each flow-run process imports tasks.common, which calls this)."""
    global _previous  # noqa: PLW0603 - one process-wide hook, chained to whatever was there
    if sys.unraisablehook is not _hook:
        _previous = sys.unraisablehook
        sys.unraisablehook = _hook


def stopped_how(exc: BaseException) -> str:
    return "cancelled" if isinstance(exc, TerminationSignal) else "stopped"


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """SIGTERM and SIGINT are ignored for the block (in the main thread, where Python runs handlers): the run is
    already ending of one, and a guard cut half way leaves the stack worse than either."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a handler not set from Python reads as None and could not be put back: such a signal is left as it is
    held = {s: h for s in (signal.SIGTERM, signal.SIGINT) if (h := signal.getsignal(s)) is not None}
    for s in held:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in held.items():
            signal.signal(s, handler)
