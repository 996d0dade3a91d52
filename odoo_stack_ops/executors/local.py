"""Local process executor: subprocess with stdin/stderr pumped by threads so pipes never deadlock."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from odoo_stack_ops.command import Command
from odoo_stack_ops.errors import CommandFailed, CommandTimeout
from odoo_stack_ops.executors.base import CHUNK, Executor, Feeder, Result, StderrTail, Stdin, Stream


def _drain(pipe: object, tail: StderrTail) -> None:
    while chunk := pipe.read1(CHUNK):  # type: ignore[attr-defined]
        tail.add(chunk)


class _Watchdog:
    """Kills the process group when the deadline passes."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float | None) -> None:
        self.fired = False
        self._timer = threading.Timer(timeout, self._kill, (proc,)) if timeout else None
        if self._timer:
            self._timer.daemon = True
            self._timer.start()

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        self.fired = True
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()


F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's capacity


def _widen_pipe(pipe: Any) -> None:
    """Let the pipe hold 1 MiB (Linux's default is 64 KiB): a stream like pg_dump's is then read in chunks up to
    16 times larger, 16 times fewer trips through Python per GB. Best effort: where refused, nothing changes."""
    with suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, CHUNK)


class LocalExecutor(Executor):
    """Runs commands on this machine (the worker)."""

    where = "local"

    def _popen(self, command: Command) -> subprocess.Popen[bytes]:
        env = {**os.environ, **command.plain_env()}
        proc = subprocess.Popen(
            list(command.argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=command.cwd, start_new_session=True,
        )
        _widen_pipe(proc.stdout)
        return proc

    @contextmanager
    def _stream(self, command: Command, *, timeout: float | None, check: bool, stdin: Stdin) -> Iterator[Stream]:
        start = time.monotonic()
        try:
            proc = self._popen(command)
        except FileNotFoundError as exc:
            result = Result(command, 127, b"", str(exc).encode(), 0.0, self.where)
            if check:
                raise CommandFailed(result, f"install {command.argv[0]} on the worker") from exc
            stream = _LocalStream(None)
            stream.result = result
            yield stream
            return
        tail = StderrTail()
        assert proc.stdin is not None  # noqa: S101 - Popen was given stdin=PIPE
        feeder = Feeder(stdin, proc.stdin.write, proc.stdin.close, (BrokenPipeError,))
        threads = [feeder, threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)]
        for t in threads:
            t.start()
        watchdog = _Watchdog(proc, timeout)
        stream = _LocalStream(proc)
        try:
            yield stream
        except BaseException:
            watchdog._kill(proc)  # the reader gave up: do not leave the command running
            raise
        finally:
            assert proc.stdout is not None  # noqa: S101
            proc.stdout.close()
            code = proc.wait()
            watchdog.cancel()
            for t in threads:
                t.join(5)
            stream.result = Result(command, code, b"", tail.value(), time.monotonic() - start, self.where)
        feeder.raise_error()
        if watchdog.fired:
            raise CommandTimeout(stream.result, f"the command ran past its {timeout:g} s timeout")
        if check:
            stream.result.check()

    def get(self, remote_path: str, local_path: str) -> None:
        shutil.copyfile(remote_path, local_path)

    def put(self, local_path: str, remote_path: str, mode: int = 0o600) -> None:
        """Copy with `mode` from creation on (a secret is never readable by others, even for a moment)."""
        fd = os.open(remote_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out, open(local_path, "rb") as src:
            os.fchmod(fd, mode)  # the file existed already: os.open's mode applies only when it creates
            shutil.copyfileobj(src, out, 1 << 20)


class _LocalStream(Stream):
    def __init__(self, proc: subprocess.Popen[bytes] | None) -> None:
        self._proc = proc

    def read(self, size: int = -1) -> bytes:
        if self._proc is None or self._proc.stdout is None or self._proc.stdout.closed:
            return b""
        if size is None or size < 0:
            return self._proc.stdout.read()
        return self._proc.stdout.read1(size)
