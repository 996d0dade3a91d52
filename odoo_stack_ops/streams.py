"""Small adapters between iterators of byte chunks and file objects, for streaming pipelines."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import zstandard


class IterReader:
    """A read-only file object over an iterator of byte chunks.

    Small reads (tarfile reads 10 KiB at a time) take a slice at an offset: the rest of a chunk is not copied
    on every read."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = self._buf[self._pos:] + b"".join(self._it)
            self._buf, self._pos = b"", 0
            return rest
        while len(self._buf) - self._pos < size:
            try:
                chunk = next(self._it)
            except StopIteration:
                break
            self._buf, self._pos = self._buf[self._pos:] + chunk, 0
        out = self._buf[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close:
            close()


def checked(chunks: Iterable[bytes], expected_sha256: str, on_mismatch: Callable[[str], Exception]) -> Iterator[bytes]:
    """Pass chunks through; after the last one, raise on_mismatch(actual) when the SHA-256 differs."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
        yield chunk
    if h.hexdigest() != expected_sha256:
        raise on_mismatch(h.hexdigest())


def zstd_decompressed(chunks: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Decompress a zstd stream given as chunks, chunk by chunk."""
    reader = zstandard.ZstdDecompressor().stream_reader(IterReader(chunks), read_across_frames=True)
    while out := reader.read(size):
        yield out


def tar_files(stream: Any) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """(member, reader) for each regular file of a tar stream (e.g. `tar -cf -` run by an executor); the stream
    is then read to its end, so the command's exit code is known when its `with` block closes."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            fh = tar.extractfile(member) if member.isfile() else None
            if fh is not None:
                yield member, fh
    for _ in stream:
        pass
