"""A cancel (SIGTERM, raised by Prefect as TerminationSignal) that lands while a finalizer runs is not lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import os, signal, sys
import tasks.common  # what every flow-run process imports
from prefect.exceptions import TerminationSignal
from prefect.utilities.engine import _prefect_sigterm_handler

signal.signal(signal.SIGTERM, _prefect_sigterm_handler)  # as while a flow runs

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the cancel arrives while this finalizer runs
        for _ in range(10000):  # the handler runs at one of these bytecodes: its exception cannot leave __del__
            pass

read, _ = os.pipe()
Finalized()
try:
    os.read(read, 1)  # a dump waiting on pg_dump's next bytes, which do not come
except TerminationSignal:
    print("cancelled", flush=True)
    sys.exit(3)
"""


def test_a_cancel_that_lands_in_a_finalizer_still_ends_the_run():
    """The swallowed TerminationSignal is raised again in the main thread, interrupting its blocking read; without
    the hook the process waits on the pipe forever (CI: a cancelled upgrade hung until SIGKILL)."""
    proc = subprocess.run([sys.executable, "-c", CHILD], check=False, cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert "Exception ignored in" in proc.stderr and "TerminationSignal" in proc.stderr, proc.stderr[-2000:]
    assert (proc.returncode, proc.stdout) == (3, "cancelled\n"), proc.stderr[-2000:]


def test_finishing_ignores_sigterm_and_sigint_for_its_block_and_puts_the_handlers_back():
    import os
    import signal

    from odoo_stack_ops.signals import finishing

    seen = []
    before = signal.signal(signal.SIGTERM, lambda *_: seen.append("term"))
    try:
        with finishing():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt here without finishing
        assert seen == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == ["term"]
    finally:
        signal.signal(signal.SIGTERM, before)
