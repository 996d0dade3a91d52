"""The one executor interface: run a command, stream its output, move files; local, SSH or Docker exec.

Tasks talk to this interface only; they never import paramiko or docker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from pydantic import SecretStr

from odoo_stack_ops.command import Command
from odoo_stack_ops.errors import CommandFailed
from odoo_stack_ops.redact import redact

log = logging.getLogger("odoo_stack_ops.exec")

CHUNK = 1 << 20
STDERR_KEEP = 64 * 1024  # bytes of stderr kept from a stream: enough for an error message, bounded

Stdin = bytes | Iterable[bytes] | BinaryIO | None
CommandLike = Command | Sequence[str]


@dataclass(frozen=True)
class Result:
    """What a finished command left: exit code, output and where it ran."""

    command: Command
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    where: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def stdout_text(self) -> str:
        return redact(self.stdout.decode("utf-8", "replace"))

    @property
    def stderr_text(self) -> str:
        return redact(self.stderr.decode("utf-8", "replace"))

    def check(self, hint: str = "") -> Result:
        """Return self when the exit code is 0, else raise CommandFailed."""
        if not self.ok:
            raise CommandFailed(self, hint)
        return self


class StderrTail:
    """Keeps the last STDERR_KEEP bytes of a stream's stderr without growing."""

    def __init__(self) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size > STDERR_KEEP and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self._chunks)[-STDERR_KEEP:]


class Stream(ABC):
    """A running command's stdout as a file-like reader. Leaving the `with` block waits for the exit
    code and raises CommandFailed when it is non-zero (unless check=False); `result` is set then."""

    result: Result | None = None

    @abstractmethod
    def read(self, size: int = -1) -> bytes: ...

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


def iter_stdin(stdin: Stdin) -> Iterator[bytes]:
    """Normalise the accepted stdin forms into an iterator of byte chunks."""
    if stdin is None:
        return
    if isinstance(stdin, bytes | bytearray):
        yield bytes(stdin)
        return
    if hasattr(stdin, "read"):
        while chunk := stdin.read(CHUNK):
            yield chunk
        return
    yield from stdin


class Feeder(threading.Thread):
    """Writes a command's stdin from a thread. A failure of the producer (a corrupt object refused mid-stream),
    unlike a closed pipe, is kept and raised to the caller once the command ended (`raise_error`): the caller
    then fails with the producer's own message, never as if a truncated input had been complete."""

    def __init__(self, stdin: Stdin, send: Callable[[bytes], object], close: Callable[[], object],
                 pipe_errors: tuple[type[BaseException], ...] = (OSError,)) -> None:
        super().__init__(daemon=True)
        self.stdin, self.send, self.close, self.pipe_errors = stdin, send, close, pipe_errors
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in iter_stdin(self.stdin):
                self.send(chunk)
        except self.pipe_errors:
            pass
        except Exception as exc:  # noqa: BLE001 - handed to the caller by raise_error
            self.error = exc
        finally:
            with contextlib.suppress(*self.pipe_errors, EOFError):
                self.close()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class Executor(ABC):
    """Runs argv commands somewhere: `run` for small outputs, `stream` for large ones."""

    where: str = "?"

    def run(
        self,
        cmd: CommandLike,
        *,
        env: Mapping[str, str | SecretStr] | None = None,
        timeout: float | None = None,
        check: bool = True,
        stdin: Stdin = None,
        hint: str = "",
    ) -> Result:
        """Run to completion and capture output. Raises CommandFailed (exit != 0 and check) or
        CommandTimeout (past `timeout` seconds, the command is stopped)."""
        command = Command.of(cmd, env)
        log.debug("run on %s: %s", self.where, command.masked())
        result = self._run(command, timeout=timeout, stdin=stdin)
        if check:
            result.check(hint)
        return result

    def stream(
        self,
        cmd: CommandLike,
        *,
        env: Mapping[str, str | SecretStr] | None = None,
        timeout: float | None = None,
        check: bool = True,
        stdin: Stdin = None,
    ) -> AbstractContextManager[Stream]:
        """Start a command and read its stdout incrementally (never held whole in memory)."""
        command = Command.of(cmd, env)
        log.debug("stream on %s: %s", self.where, command.masked())
        return self._stream(command, timeout=timeout, check=check, stdin=stdin)

    def _run(self, command: Command, *, timeout: float | None, stdin: Stdin) -> Result:
        """Capture everything by reading the stream to its end (one code path per executor)."""
        start = time.monotonic()
        with self._stream(command, timeout=timeout, check=False, stdin=stdin) as out:
            stdout = out.read()
        assert out.result is not None  # noqa: S101 - set when the stream closes
        return Result(command, out.result.exit_code, stdout, out.result.stderr, time.monotonic() - start, self.where)

    @abstractmethod
    def _stream(
        self, command: Command, *, timeout: float | None, check: bool, stdin: Stdin
    ) -> AbstractContextManager[Stream]: ...

    @abstractmethod
    def get(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the executor's side to a local path."""

    @abstractmethod
    def put(self, local_path: str, remote_path: str, mode: int = 0o600) -> None:
        """Copy a local file to the executor's side."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
