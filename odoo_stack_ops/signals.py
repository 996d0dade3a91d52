"""A cancel that lands in a finalizer is delivered again, not lost.

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

import signal
import sys
import threading
from typing import Any

from prefect.exceptions import TerminationSignal

AGAIN_AFTER_S = 0.05
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
