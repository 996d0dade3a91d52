"""Filestore leg: incremental copies of /var/lib/odoo/filestore/<db> in Spaces, packed.

Each file's bytes (age-encrypted alone when encryption is on) are a blob appended to a pack object of about
PACK_TARGET bytes; the night's filestore manifest says where each file's blob is (pack, offset, length). A night
reads and packs only files whose blob no earlier pack holds: Odoo names each attachment `<sha1[:2]>/<sha1>` of
its content, so that is known from the path without reading it; other files are re-read when size or mtime
change. Packs make a night a few large requests instead of one per file (200,000 files: ~100 PUTs, not
200,000), and a restore a few large GETs. Blobs are checked against their file's digest on every read.
Backups of the earlier format (one object per file, manifest version 1) are still read the same way: such an
object is a pack of one blob.

Packs are never rewritten. A pack of which tonight needs less than REPACK_BELOW of the bytes (Odoo deleted the
other attachments) is left behind instead: its files are read and packed again tonight, so once the older
backups that point at it expire, retention deletes it whole. Without that one kept file would keep its deleted
neighbours in Spaces for as long as the file lives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import zstandard

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.spaces import explain
from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.pools import GIVE_UP_S, DaemonPool

log = logging.getLogger(__name__)

_SHA1_NAME = re.compile(r"^[0-9a-f]{40}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._@+=,~/ -]+\Z")
ARGV_BUDGET = 64 * 1024  # bytes of paths per tar invocation, far below ARG_MAX
SPOOL_MAX = 8 * 1024 * 1024
PACK_TARGET = 32 * 1024 * 1024  # a pack is closed once it holds this much: few requests, restores in parallel
PACKS_IN_FLIGHT = 3  # closed packs uploading at once (each a temporary file: bounded disk, not memory)
REPACK_BELOW = 0.5  # a pack tonight needs less of than this share is left behind: at most half a pack re-read


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
    pack: str | None = None  # pack id; None: a version-1 backup's own object for this file
    offset: int = 0
    length: int = -1  # stored bytes of the blob in its pack (-1: the whole object)

    def location(self, prefix: str, tag: str | None) -> tuple[str, int, int]:
        """(key, offset, length) of this file's stored bytes; length -1 means the whole object."""
        if self.pack is None:
            return layout.object_key(prefix, self.algo, self.digest, tag), 0, -1
        return layout.pack_key(prefix, self.pack), self.offset, self.length


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


@dataclass(frozen=True)
class Previous:
    """What earlier nights stored that tonight may point at: by content and by path (packed blobs only)."""

    by_digest: dict[tuple[str, str], StoredFile]
    by_path: dict[str, StoredFile]

    @classmethod
    def of(cls, files: Iterable[StoredFile]) -> Previous:
        packed = [f for f in files if f.pack is not None]
        return cls({(f.algo, f.digest): f for f in packed}, {f.path: f for f in packed})


NOTHING = Previous({}, {})


def plan_uploads(entries: Iterable[FileEntry], present: set[str], previous: Previous
                 ) -> tuple[list[StoredFile], list[FileEntry]]:
    """Split tonight's files into those an existing pack holds (known content, pack present) and those to read
    (pure). A file needs reading when its content is unknown (no blob of the SHA-1 its Odoo name promises, and
    changed since the previous night) or no present pack holds it."""
    known: list[StoredFile] = []
    to_read: list[FileEntry] = []
    for e in entries:
        sha1 = odoo_sha1(e.path)
        hit = previous.by_digest.get(("sha1", sha1)) if sha1 else None
        if hit is None:  # not Odoo-named (or it broke its name's promise): unchanged since the previous night?
            prev = previous.by_path.get(e.path)
            hit = prev if prev and (prev.size, prev.mtime) == (e.size, e.mtime) else None
        if hit is not None and hit.size == e.size and hit.pack in present:
            known.append(StoredFile(e.path, e.size, e.mtime, hit.algo, hit.digest, hit.pack, hit.offset, hit.length))
        else:
            to_read.append(e)
    return known, to_read


def sparse_packs(known: Iterable[StoredFile], sizes: dict[str, int], below: float = REPACK_BELOW) -> set[str]:
    """Packs of which the files `known` need less than `below` of the stored bytes (pure): a blob two files
    share counts once, a pack tonight does not need at all is not sparse (nothing points at it any more)."""
    blobs = {(f.pack, f.offset, f.length) for f in known if f.pack is not None}
    live: dict[str, int] = {}
    for pack, _offset, length in blobs:
        live[pack] = live.get(pack, 0) + length
    return {pack for pack, n in live.items() if n < below * sizes.get(pack, 0)}


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
    new_objects: int = 0  # new blobs
    new_bytes: int = 0
    read_files: int = 0
    packs: int = 0
    repacked_files: int = 0  # read again because their pack was mostly deleted files (sparse_packs)
    repacked_bytes: int = 0
    duration_s: float = 0.0


class _Packer:
    """Appends blobs to a pack on disk; a full pack uploads on a small pool (PACKS_IN_FLIGHT at most) while the
    next one fills. A pack's id is random: its blobs are checked by their files' digests, not by the pack's."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix, self.target = s3, bucket, prefix, PACK_TARGET
        self.pool = DaemonPool(PACKS_IN_FLIGHT, "s3pack")
        self.slots = threading.BoundedSemaphore(PACKS_IN_FLIGHT)
        self.futures: list[Future[None]] = []
        self.file: Any = None
        self.id = ""
        self.packs = 0

    def add(self, blob: Any) -> tuple[str, int, int]:
        """Append a blob (a file positioned anywhere); returns (pack id, offset, length)."""
        if self.file is None:
            self.file, self.id = tempfile.TemporaryFile(prefix="odoo-pack-"), secrets.token_hex(32)  # noqa: SIM115
        offset = self.file.tell()
        blob.seek(0)
        shutil.copyfileobj(blob, self.file, 1 << 20)
        where = (self.id, offset, self.file.tell() - offset)
        if self.file.tell() >= self.target:
            self.close_pack()
        return where

    def close_pack(self) -> None:
        if self.file is None:
            return
        file, key = self.file, layout.pack_key(self.prefix, self.id)
        self.file = None
        self.packs += 1
        self.slots.acquire()
        fut = self.pool.submit(self._put, key, file)
        fut.add_done_callback(lambda _f: self.slots.release())
        self.futures.append(fut)
        for f in [f for f in self.futures if f.done()]:
            f.result()
            self.futures.remove(f)

    def _put(self, key: str, file: Any) -> None:
        try:
            file.seek(0)
            self.s3.upload_fileobj(file, self.bucket, key)
        except Exception as exc:
            raise explain(exc, self.bucket, key) from exc
        finally:
            file.close()

    def finish(self, ok: bool = True) -> None:
        """Upload the last pack and wait for every upload (raising the first failure)."""
        try:
            if ok:
                self.close_pack()
            for f in self.futures:
                f.result()
        finally:
            if self.file is not None:
                self.file.close()
            self.pool.shutdown(GIVE_UP_S)  # all done, or failing: a pack still sending is left to retention


def read_previous(s3: Any, bucket: str, key: str | None, tag: str | None) -> Previous:
    """Tonight's reuse index from the newest filestore manifest; NOTHING when there is none or its blobs were
    written for other encryption recipients (a key rotation re-uploads each blob once)."""
    if not key:
        return NOTHING
    doc = _decode(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    if doc.get("tag") != tag:
        return NOTHING
    return Previous.of(_files(doc))


def encode_manifest(database: str, st: str, root: str, files: list[StoredFile], tag: str | None = None) -> bytes:
    doc = {"version": 2, "database": database, "stamp": st, "root": root, "tag": tag,
           "files": [[f.path, f.size, f.mtime, f.algo, f.digest, f.pack, f.offset, f.length]
                     for f in sorted(files, key=lambda f: f.path)]}
    return zstandard.ZstdCompressor(level=9).compress(json.dumps(doc, separators=(",", ":")).encode())


def _decode(data: bytes) -> dict[str, Any]:
    return json.loads(zstandard.ZstdDecompressor().decompress(data))  # type: ignore[no-any-return]


def _files(doc: dict[str, Any]) -> list[StoredFile]:
    return [StoredFile(*entry) for entry in doc["files"]]  # 5 fields (version 1) or 8 (version 2)


def decode_manifest(data: bytes) -> list[StoredFile]:
    return _files(_decode(data))


def present_packs(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Id → stored size of the packs in the bucket: one listing request per 1,000 packs (about 32 GB)."""
    from odoo_stack_ops.backup.spaces import iter_objects  # noqa: PLC0415

    return {o["Key"].rsplit("/", 1)[1]: o["Size"] for o in iter_objects(s3, bucket, layout.packs_prefix(prefix))}


def backup_filestore(
    executor: Executor, root: str, *, s3: Any, bucket: str, prefix: str, database: str, st: str,
    previous: Previous, progress: Any = None, encrypt: Callable[[Any], Any] | None = None,
) -> tuple[list[StoredFile], FilestoreStats]:
    """Pack what no present pack holds; return tonight's file list (for the manifest) and statistics.

    With `encrypt` (file → encrypted file) each blob is encrypted on its own."""
    start = time.monotonic()
    listing = executor.run(list_argv(root), timeout=3600, check=False)
    if listing.exit_code != 0 and "No such file" in listing.stderr_text:
        log.warning("filestore %s does not exist: backing up an empty filestore", root)
        entries: list[FileEntry] = []
    else:
        listing.check("check that the filestore volume is mounted at odoo.data_dir in odoo-core")
        entries = parse_listing(listing.stdout.decode("utf-8", "surrogateescape"), root)
    sizes = present_packs(s3, bucket, prefix) if previous.by_path else {}
    known, to_read = plan_uploads(entries, set(sizes), previous)
    sparse = sparse_packs(known, sizes)
    present = set(sizes) - sparse
    repacked = [f for f in known if f.pack in sparse]
    if sparse:
        log.info("filestore %s: %d pack(s) mostly hold deleted files: their %d kept file(s) (%.1f MiB) are packed "
                 "again, so retention can delete those packs once older backups expire", database, len(sparse),
                 len(repacked), sum(f.size for f in repacked) / (1 << 20))
        known, to_read = plan_uploads(entries, present, previous)
    stats = FilestoreStats(files=len(entries), bytes=sum(e.size for e in entries), read_files=len(to_read),
                           repacked_files=len(repacked), repacked_bytes=sum(f.size for f in repacked))
    stored = list(known)
    by_path = {e.path: e for e in to_read}
    packer = _Packer(s3, bucket, prefix)
    ok = False
    try:
        _read_batches(executor, root, to_read, by_path, previous, present, stored, stats, packer, progress, encrypt)
        ok = True
    except (tarfile.ReadError, EOFError) as exc:
        raise ConnectError(f"the filestore transfer from {executor.where} was cut short ({exc}); transient, "
                           f"retried") from exc
    finally:
        packer.finish(ok)
    stats.packs = packer.packs
    if len(stored) != len(entries):
        missing = sorted({e.path for e in entries} - {s.path for s in stored})[:5]
        raise ConnectError(f"{len(entries) - len(stored)} filestore file(s) did not arrive, e.g. {missing}: the "
                           f"transfer was cut or the files were deleted meanwhile; transient, retried")
    stats.duration_s = round(time.monotonic() - start, 3)
    return sorted(stored, key=lambda f: f.path), stats


def _read_batches(executor: Executor, root: str, to_read: list[FileEntry], by_path: dict[str, FileEntry],
                  previous: Previous, present: set[str], stored: list[StoredFile], stats: FilestoreStats, packer: _Packer,
                  progress: Any, encrypt: Callable[[Any], Any] | None) -> None:
    """Stream the files to read as tar batches, hash each, pack the blobs no pack holds yet."""
    tonight: dict[tuple[str, str], StoredFile] = {}
    for argv in tar_batches(root, to_read):
        with executor.stream(argv, timeout=3600) as out, tarfile.open(fileobj=out, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                entry = by_path[member.name.removeprefix("./")]
                algo, digest, spool, size = _spool_member(tar, member, entry)
                with spool:
                    same = tonight.get((algo, digest))
                    if same is None and (prev := previous.by_digest.get((algo, digest))) and prev.pack in present:
                        same = prev
                    if same is not None:
                        stored.append(StoredFile(entry.path, size, entry.mtime, algo, digest, same.pack, same.offset,
                                                 same.length))
                        continue
                    spool.seek(0)
                    blob = encrypt(spool) if encrypt is not None else spool
                    try:
                        pack, offset, length = packer.add(blob)
                    finally:
                        if blob is not spool:
                            blob.close()
                record = StoredFile(entry.path, size, entry.mtime, algo, digest, pack, offset, length)
                tonight[(algo, digest)] = record
                stored.append(record)
                stats.new_objects += 1
                stats.new_bytes += size
                if progress:
                    progress(stats)
            for _ in out:  # tar's end-of-archive padding: read it so tar exits 0, not on SIGPIPE
                pass


def _spool_member(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: FileEntry) -> tuple[str, str, Any, int]:
    """Copy one tar member into a spool while hashing it once: SHA-1 for an Odoo-named file (its name promises
    it), else SHA-256; a file that breaks its name's promise is hashed again by SHA-256. (algo, digest, spool,
    size)."""
    src = tar.extractfile(member)
    assert src is not None  # noqa: S101 - regular file
    promised = odoo_sha1(entry.path)
    h = hashlib.sha1(usedforsecurity=False) if promised else hashlib.sha256()
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115 - the caller closes it
    size = 0
    while chunk := src.read(1 << 20):
        h.update(chunk)
        spool.write(chunk)
        size += len(chunk)
    if not promised:
        return "sha256", h.hexdigest(), spool, size
    if promised == h.hexdigest():
        return "sha1", promised, spool, size
    log.warning("filestore file %s does not hash to its name: stored by SHA-256 instead", entry.path)
    spool.seek(0)
    return "sha256", hash_object(iter(lambda: spool.read(1 << 20), b""), "sha256"), spool, size


def hash_object(chunks: Iterable[bytes], algo: str) -> str:
    h = hashlib.new(algo, usedforsecurity=False) if algo == "sha1" else hashlib.new(algo)
    for c in chunks:
        h.update(c)
    return h.hexdigest()
