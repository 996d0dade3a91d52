"""Filestore objects come back in manifest order and hash-checked although small ones are fetched ahead."""

from __future__ import annotations

import hashlib
import os

import pytest

from odoo_stack_ops.backup import layout, restore
from odoo_stack_ops.backup.filestore import StoredFile
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.errors import VerificationFailed


def stored(bucket: Bucket, data: bytes, i: int) -> StoredFile:
    sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    bucket.put_bytes(layout.object_key(bucket.prefix, "sha1", sha), data)
    return StoredFile(f"{sha[:2]}/{sha}", len(data), 1_700_000_000 + i, "sha1", sha)


def test_prefetched_objects_keep_manifest_order_and_are_hash_checked(s3, bucket):
    b = Bucket(s3.client(), bucket, "p")
    # small objects (prefetched) with larger ones (streamed in turn) between them, smallest last
    datas = [os.urandom(restore.PREFETCH_MAX + 1 if i % 17 == 5 else 3000 - i * 50) for i in range(3 * restore.PREFETCH)]
    files = [stored(b, d, i) for i, d in enumerate(datas)]
    got = [(path, size, mtime, b"".join(chunks)) for path, size, mtime, chunks in restore.object_members(b, files)]
    assert got == [(f.path, f.size, f.mtime, d) for f, d in zip(files, datas, strict=True)]

    victim = files[len(files) // 2]  # a prefetched one, replaced by other bytes under its address
    b.put_bytes(layout.object_key("p", "sha1", victim.digest), b"x" * victim.size)
    with pytest.raises(VerificationFailed, match=victim.path):
        for _path, _size, _mtime, chunks in restore.object_members(b, files):
            b"".join(chunks)
