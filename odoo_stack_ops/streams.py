"""Small adapters between iterators of byte chunks and file objects, for streaming pipelines."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import zstandard


class IterReader:
    """A read-only file object over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = self._buf + b"".join(self._it)
            self._buf = b""
            return rest
        while len(self._buf) < size:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

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
