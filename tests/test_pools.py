"""DaemonPool (odoo_stack_ops/pools.py): futures as ThreadPoolExecutor's; a shutdown waits for a running call only
as long as it is told, and a process exits while one is still blocked."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from odoo_stack_ops.pools import DaemonPool


def test_results_errors_and_a_bounded_shutdown():
    pool = DaemonPool(2, "t")
    assert pool.submit(lambda a, b: a + b, 2, 3).result(5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    gate, started = threading.Event(), threading.Semaphore(0)

    def block() -> bool:
        started.release()
        return gate.wait()

    blocked = [pool.submit(block) for _ in range(2)]
    assert started.acquire(timeout=5) and started.acquire(timeout=5)  # both threads busy
    queued = pool.submit(lambda: "never")
    start = time.monotonic()
    assert pool.shutdown(0.3) is False  # still running: given up on
    assert 0.25 < time.monotonic() - start < 3
    assert queued.cancelled() and not any(f.done() for f in blocked)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(print)
    gate.set()
    assert [f.result(5) for f in blocked] == [True, True]
    assert DaemonPool(1, "idle").shutdown(None) is True


def test_a_process_exits_while_a_call_is_blocked():
    code = ("import threading\nfrom odoo_stack_ops.pools import DaemonPool\n"
            "DaemonPool(1, 't').submit(threading.Event().wait)\nprint('leaving')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "leaving\n"
    with pytest.raises(subprocess.TimeoutExpired):  # what ThreadPoolExecutor does at exit: join the blocked thread
        subprocess.run([sys.executable, "-c", code.replace("from odoo_stack_ops.pools import DaemonPool", "from "
                        "concurrent.futures import ThreadPoolExecutor as DaemonPool").replace("(1, 't')", "(1)")],
                       capture_output=True, timeout=3, check=False)
