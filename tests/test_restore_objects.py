"""Filestore blobs come back whole and hash-checked: packs fetched ahead in parallel, a version-1 backup's
per-file objects read by the same path, a second night reads only what no present pack holds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from odoo_stack_ops.backup import filestore as fs
from odoo_stack_ops.backup import layout, restore
from odoo_stack_ops.backup.filestore import StoredFile
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.errors import VerificationFailed
from odoo_stack_ops.executors.local import LocalExecutor


def stored(bucket: Bucket, data: bytes, i: int) -> StoredFile:
    sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    bucket.put_bytes(layout.object_key(bucket.prefix, "sha1", sha), data)
    return StoredFile(f"{sha[:2]}/{sha}", len(data), 1_700_000_000 + i, "sha1", sha)


def members(b: Bucket, files: list[StoredFile]) -> dict[str, bytes]:
    return {path: b"".join(chunks) for path, _size, _mtime, chunks in restore.object_members(b, files)}


def test_version_1_objects_keep_manifest_order_and_are_hash_checked(s3, bucket):
    b = Bucket(s3.client(), bucket, "p")
    # small objects (held in memory) with larger ones (spooled to disk) between them
    datas = [os.urandom(restore.SPOOL_MEMORY + 1 if i % 17 == 5 else 3000 - i * 50) for i in range(3 * restore.PREFETCH)]
    files = [stored(b, d, i) for i, d in enumerate(datas)]
    got = [(path, size, mtime, b"".join(chunks)) for path, size, mtime, chunks in restore.object_members(b, files)]
    assert got == [(f.path, f.size, f.mtime, d) for f, d in zip(files, datas, strict=True)]

    victim = files[len(files) // 2]  # replaced by other bytes under its address
    b.put_bytes(layout.object_key("p", "sha1", victim.digest), b"x" * victim.size)
    with pytest.raises(VerificationFailed, match=victim.path):
        members(b, files)


def write_tree(root: Path, datas: list[bytes], odd: dict[str, bytes]) -> None:
    for data in datas:
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        (root / sha[:2]).mkdir(parents=True, exist_ok=True)
        (root / sha[:2] / sha).write_bytes(data)
    for name, data in odd.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def night(b: Bucket, root: Path, st: str, previous: fs.Previous) -> tuple[list[StoredFile], fs.FilestoreStats]:
    return fs.backup_filestore(LocalExecutor(), str(root), s3=b.s3, bucket=b.name, prefix=b.prefix,
                               database="db", st=st, previous=previous)


def test_packed_nights_restore_whole_and_read_only_new_files(s3, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(fs, "PACK_TARGET", 64 << 10)  # several packs from a small tree
    b = Bucket(s3.client(), bucket, "p")
    root = tmp_path / "fs"
    datas = [os.urandom(n) for n in (0, 1, 700, 5000, 40_000, 70_000, 200_000, *range(100, 3000, 97))]
    odd = {"checklists/a.txt": b"same bytes", "checklists/b.txt": b"same bytes", "misnamed/x": b"not its sha",
           f"ab/ab{'0' * 38}": b"named like Odoo names, but not by this content"}
    write_tree(root, datas, odd)
    files, stats = night(b, root, "20261201T010000Z", fs.NOTHING)
    assert stats.packs >= 3 and stats.read_files == len(files) == len(datas) + len(odd)
    assert stats.new_objects == len(files) - 1  # the two identical files share one blob
    expected = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert members(b, files) == expected
    liar = next(f for f in files if f.path == f"ab/ab{'0' * 38}")
    assert (liar.algo, liar.digest) == ("sha256", hashlib.sha256(odd[liar.path]).hexdigest())

    # second night: two new files; only they are read, into one new pack; the rest points at old packs
    write_tree(root, [b"new one", b"new two"], {})
    files2, stats2 = night(b, root, "20261202T010000Z", fs.Previous.of(files))
    assert (stats2.read_files, stats2.new_objects, stats2.packs) == (2, 2, 1)
    expected = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert members(b, files2) == expected

    # a pack gone from the bucket: the files it held are read again the next night, nothing points at it
    lost = files2[0].pack
    b.s3.delete_object(Bucket=bucket, Key=layout.pack_key("p", lost))
    held = {f.path for f in files2 if f.pack == lost}
    files3, stats3 = night(b, root, "20261203T010000Z", fs.Previous.of(files2))
    assert stats3.read_files == len(held) and lost not in {f.pack for f in files3}
    assert members(b, files3) == expected

    # altered bytes inside a pack: the file whose blob they are fails its hash check, by name
    victim = next(f for f in files3 if f.length > 100)
    key = layout.pack_key("p", victim.pack)
    data = bytearray(b.get_bytes(key))
    data[victim.offset + 50] ^= 1
    b.put_bytes(key, bytes(data))
    with pytest.raises(VerificationFailed, match=victim.path):
        members(b, files3)
