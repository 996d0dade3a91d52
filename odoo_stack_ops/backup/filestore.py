"""Filestore leg: incremental, content-addressed copies of /var/lib/odoo/filestore/<db> in Spaces.

Odoo stores each attachment at `<sha1[:2]>/<sha1>` of its content, so a file's object key is known from its
path without reading it: a night uploads only objects the bucket lacks, after checking the content really
hashes to its name. Files not named that way are keyed by SHA-256 and re-hashed only when size or mtime change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import zstandard

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.spaces import explain
from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor

log = logging.getLogger(__name__)

_SHA1_NAME = re.compile(r"^[0-9a-f]{40}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._@+=,~/ -]+$")
ARGV_BUDGET = 64 * 1024  # bytes of paths per tar invocation, far below ARG_MAX
SPOOL_MAX = 8 * 1024 * 1024
UPLOAD_WORKERS = 8


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the filestore root
    size: int
    mtime: int


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    mtime: int
    algo: str  # "sha1" (Odoo's own naming) or "sha256"
    digest: str


def list_argv(root: str) -> list[str]:
    """List every regular file with size and mtime; portable across GNU and busybox."""
    return ["find", root, "-type", "f", "-exec", "stat", "-c", "%s %Y %n", "{}", "+"]


def parse_listing(text: str, root: str) -> list[FileEntry]:
    """Parse `stat -c '%s %Y %n'` lines into entries relative to root (pure)."""
    base = root.rstrip("/") + "/"
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        size, mtime, name = line.split(" ", 2)
        if not name.startswith(base):
            raise OpsError(f"unexpected path {name!r} outside {root}")
        entries.append(FileEntry(name[len(base):], int(size), int(mtime)))
    return sorted(entries, key=lambda e: e.path)


def odoo_sha1(path: str) -> str | None:
    """The SHA-1 an Odoo filestore path promises (`ab/ab12…`), or None for other files (pure)."""
    parts = path.split("/")
    if len(parts) == 2 and _SHA1_NAME.match(parts[1]) and parts[0] == parts[1][:2]:
        return parts[1]
    return None


def plan_uploads(
    entries: Iterable[FileEntry], present: set[str], previous: dict[str, StoredFile], prefix: str,
    tag: str | None = None,
) -> tuple[list[StoredFile], list[FileEntry]]:
    """Split tonight's files into those already stored (known address, object present) and those to read (pure).

    A file needs reading when its address is unknown (not Odoo-named and changed since the previous night) or
    its object is missing from the bucket."""
    known: list[StoredFile] = []
    to_read: list[FileEntry] = []
    for e in entries:
        sha1 = odoo_sha1(e.path)
        if sha1:
            stored = StoredFile(e.path, e.size, e.mtime, "sha1", sha1)
        else:
            prev = previous.get(e.path)
            stored = prev if prev and (prev.size, prev.mtime) == (e.size, e.mtime) else None  # type: ignore[assignment]
        if stored is not None and layout.object_key(prefix, stored.algo, stored.digest, tag) in present:
            known.append(stored)
        else:
            to_read.append(e)
    return known, to_read


def tar_batches(root: str, entries: list[FileEntry]) -> Iterator[list[str]]:
    """`tar` argv lists covering `entries`, each within ARGV_BUDGET; paths are validated, never shell-parsed."""
    batch: list[str] = []
    used = 0
    for e in entries:
        if not _SAFE_PATH.match(e.path) or e.path.startswith("/") or ".." in e.path.split("/"):
            raise OpsError(f"refusing filestore path with unexpected characters: {e.path!r}")
        if batch and used + len(e.path) > ARGV_BUDGET:
            yield ["tar", "-cf", "-", "-C", root, "--", *batch]
            batch, used = [], 0
        batch.append(e.path)
        used += len(e.path) + 1
    if batch:
        yield ["tar", "-cf", "-", "-C", root, "--", *batch]


@dataclass
class FilestoreStats:
    files: int = 0
    bytes: int = 0
    new_objects: int = 0
    new_bytes: int = 0
    read_files: int = 0
    duration_s: float = 0.0


class _Uploader:
    """Uploads spooled objects on a small thread pool, at most 2 x workers queued (bounded memory)."""

    def __init__(self, s3: Any, bucket: str, encrypt: Callable[[Any], Any] | None = None) -> None:
        self.s3, self.bucket, self.encrypt = s3, bucket, encrypt
        self.pool = ThreadPoolExecutor(UPLOAD_WORKERS, thread_name_prefix="s3obj")
        self.slots = threading.BoundedSemaphore(UPLOAD_WORKERS * 2)
        self.futures: list[Future[None]] = []

    def submit(self, key: str, spool: Any, size: int) -> None:
        self.slots.acquire()
        fut = self.pool.submit(self._put, key, spool, size)
        fut.add_done_callback(lambda _f: self.slots.release())
        self.futures.append(fut)
        for f in [f for f in self.futures if f.done()]:
            f.result()
            self.futures.remove(f)

    def _put(self, key: str, spool: Any, size: int) -> None:
        try:
            spool.seek(0)
            if self.encrypt is not None:
                plain, spool = spool, self.encrypt(spool)
                plain.close()
                size = spool.seek(0, 2)
                spool.seek(0)
            if size > SPOOL_MAX:
                self.s3.upload_fileobj(spool, self.bucket, key)
            else:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=spool.read())
        except Exception as exc:
            raise explain(exc, self.bucket, key) from exc
        finally:
            spool.close()

    def finish(self) -> None:
        try:
            for f in self.futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def read_previous(s3: Any, bucket: str, key: str | None) -> dict[str, StoredFile]:
    """Files of a previous filestore manifest by path ({} when there is none)."""
    if not key:
        return {}
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return {f.path: f for f in decode_manifest(data)}


def encode_manifest(database: str, st: str, root: str, files: list[StoredFile]) -> bytes:
    doc = {"version": 1, "database": database, "stamp": st, "root": root,
           "files": [[f.path, f.size, f.mtime, f.algo, f.digest] for f in sorted(files, key=lambda f: f.path)]}
    return zstandard.ZstdCompressor(level=9).compress(json.dumps(doc, separators=(",", ":")).encode())


def decode_manifest(data: bytes) -> list[StoredFile]:
    doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
    return [StoredFile(p, s, m, a, d) for p, s, m, a, d in doc["files"]]


def present_objects(s3: Any, bucket: str, prefix: str) -> set[str]:
    from odoo_stack_ops.backup.spaces import iter_objects  # noqa: PLC0415

    return {o["Key"] for o in iter_objects(s3, bucket, layout.objects_prefix(prefix))}


def backup_filestore(
    executor: Executor, root: str, *, s3: Any, bucket: str, prefix: str, database: str, st: str,
    previous: dict[str, StoredFile], progress: Any = None, encrypt: Callable[[Any], Any] | None = None,
    tag: str | None = None,
) -> tuple[list[StoredFile], FilestoreStats]:
    """Upload what the bucket lacks; return tonight's file list (for the manifest) and statistics.

    With `encrypt` (file → encrypted file) objects are stored encrypted under keys carrying `tag`."""
    start = time.monotonic()
    listing = executor.run(list_argv(root), timeout=3600, check=False)
    if listing.exit_code != 0 and "No such file" in listing.stderr_text:
        log.warning("filestore %s does not exist: backing up an empty filestore", root)
        entries: list[FileEntry] = []
    else:
        listing.check("check that the filestore volume is mounted at odoo.data_dir in odoo-core")
        entries = parse_listing(listing.stdout.decode("utf-8", "surrogateescape"), root)
    present = present_objects(s3, bucket, prefix)
    known, to_read = plan_uploads(entries, present, previous, prefix, tag)
    stats = FilestoreStats(files=len(entries), bytes=sum(e.size for e in entries), read_files=len(to_read))
    stored = list(known)
    by_path = {e.path: e for e in to_read}
    uploader = _Uploader(s3, bucket, encrypt)
    try:
        _read_batches(executor, root, to_read, by_path, prefix, tag, present, stored, stats, uploader, progress)
    except (tarfile.ReadError, EOFError) as exc:
        raise ConnectError(f"the filestore transfer from {executor.where} was cut short ({exc}); transient, "
                           f"retried") from exc
    finally:
        uploader.finish()
    if len(stored) != len(entries):
        missing = sorted({e.path for e in entries} - {s.path for s in stored})[:5]
        raise ConnectError(f"{len(entries) - len(stored)} filestore file(s) did not arrive, e.g. {missing}: the "
                           f"transfer was cut or the files were deleted meanwhile; transient, retried")
    stats.duration_s = round(time.monotonic() - start, 3)
    return sorted(stored, key=lambda f: f.path), stats


def _read_batches(executor: Executor, root: str, to_read: list[FileEntry], by_path: dict[str, FileEntry],
                  prefix: str, tag: str | None, present: set[str], stored: list[StoredFile], stats: FilestoreStats,
                  uploader: _Uploader, progress: Any) -> None:
    """Stream the files to read as tar batches, hash each, queue the missing objects for upload."""
    for argv in tar_batches(root, to_read):
        with executor.stream(argv, timeout=3600) as out, tarfile.open(fileobj=out, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                entry = by_path[member.name.removeprefix("./")]
                record, key, spool, size = _spool_member(tar, member, entry, prefix, tag)
                stored.append(record)
                if key in present:
                    spool.close()
                    continue
                present.add(key)
                stats.new_objects += 1
                stats.new_bytes += size
                uploader.submit(key, spool, size)
                if progress:
                    progress(stats)
            for _ in out:  # tar's end-of-archive padding: read it so tar exits 0, not on SIGPIPE
                pass


def _spool_member(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: FileEntry, prefix: str,
                  tag: str | None) -> tuple[StoredFile, str, Any, int]:
    """Copy one tar member into a spool while hashing; check Odoo's name promise."""
    src = tar.extractfile(member)
    assert src is not None  # noqa: S101 - regular file
    sha1, sha256 = hashlib.sha1(usedforsecurity=False), hashlib.sha256()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115 - closed by the uploader
    size = 0
    while chunk := src.read(1 << 20):
        sha1.update(chunk)
        sha256.update(chunk)
        spool.write(chunk)
        size += len(chunk)
    promised = odoo_sha1(entry.path)
    if promised and promised == sha1.hexdigest():
        algo, digest = "sha1", promised
    else:
        if promised:
            log.warning("filestore file %s does not hash to its name: stored by SHA-256 instead", entry.path)
        algo, digest = "sha256", sha256.hexdigest()
    return (StoredFile(entry.path, size, entry.mtime, algo, digest), layout.object_key(prefix, algo, digest, tag),
            spool, size)


def hash_object(chunks: Iterable[bytes], algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False) if algo == "sha1" else hashlib.new(algo)
    for c in chunks:
        h.update(c)
    return h.hexdigest()
