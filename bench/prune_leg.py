"""Retention's memory at scale: plan over `nights` nights of `files` filestore objects each, in this process.

    python -m bench.prune_leg [nights] [files]     prints {"prune_peak_rss_mb": ..., ...} as JSON

The bucket is generated, not stored: a stand-in S3 client answers the calls prune.plan makes (list_objects_v2
page by page, get_object as a stream), producing each manifest and each filestore manifest (zstd, the
night's real format) when it is read, so the generator holds nothing and the peak RSS (VmHWM) is the
planner's: record loading, the listing and the filestore manifests streaming through. Night n holds files
[n * new, files + n * new): `new` (2 %) new objects a night, as many gone, the rest shared with the night
before. `nights` nights are kept (within 30 days) and two older ones deleted; every key is 60 days old
except tonight's, so the plan decides every object (and is checked: exactly the deleted nights' own go).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import zstandard

PREFIX = "bench"
DB = "odoo_core"
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def digest(i: int) -> str:
    return hashlib.sha1(i.to_bytes(8, "big"), usedforsecurity=False).hexdigest()


class Body:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks

    def iter_chunks(self, _size: int = 0) -> Iterator[bytes]:
        return self.chunks

    def read(self) -> bytes:
        return b"".join(self.chunks)

    def close(self) -> None:
        pass


class GeneratedBucket:
    """The calls prune.plan makes, answered from a formula (see the module docstring)."""

    def __init__(self, nights: int, files: int, new_fraction: float = 0.02) -> None:
        from odoo_stack_ops.backup import layout

        self.layout, self.nights, self.files = layout, nights, files
        self.new = max(1, int(files * new_fraction))
        self.total = nights + 2  # two more, older than 30 days: deleted, with the objects only they had
        ages = [32, 31, *range(nights - 1, -1, -1)]  # days; nights <= 30 keeps the rest within the window
        self.stamps = [layout.stamp(NOW - timedelta(days=age, hours=1)) for age in ages]

    def get_paginator(self, _name: str) -> GeneratedBucket:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:  # noqa: N803 - boto's names
        keys = self._keys(Prefix)
        while True:
            page = [next(keys, None) for _ in range(1000)]
            contents = [{"Key": k, "LastModified": m, "Size": 1} for k, m in filter(None, page)]
            yield {"Contents": contents, "ResponseMetadata": {"HTTPHeaders": {}}}
            if len(contents) < 1000:
                return

    def _keys(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        old = NOW - timedelta(days=60)
        lay = self.layout
        if prefix.endswith("/objects/"):
            for i in range(self.files + (self.total - 1) * self.new):
                yield lay.object_key(PREFIX, "sha1", digest(i)), old
            return
        for n, st in enumerate(self.stamps):
            when = lay.parse_stamp(st) if n == self.total - 1 else old
            if prefix.endswith("/manifests/"):
                yield lay.manifest_key(PREFIX, DB, st), when
            elif prefix.endswith("/db/"):
                yield lay.dump_key(PREFIX, DB, st), when
            elif prefix.endswith("/filestore/"):
                yield lay.filestore_manifest_key(PREFIX, DB, st), when

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        st = Key.rsplit("/", 1)[1].split(".", maxsplit=1)[0]
        n = self.stamps.index(st)
        if "/manifests/" in Key:
            from odoo_stack_ops.backup import manifest as mf

            doc = {"format": mf.FORMAT, "verified": True, "encryption": {"enabled": False}, "stack": PREFIX,
                   "database": DB, "stamp": st, "started_at": NOW.isoformat(), "finished_at": NOW.isoformat(),
                   "duration_s": 1.0,
                   "dump": {"key": self.layout.dump_key(PREFIX, DB, st), "raw_bytes": 1, "raw_sha256": "0" * 64,
                            "stored_bytes": 1, "stored_sha256": "0" * 64},
                   "filestore": {"manifest_key": self.layout.filestore_manifest_key(PREFIX, DB, st)}}
            return {"Body": Body(iter([json.dumps(doc).encode()]))}
        return {"Body": Body(self._filestore_manifest(n, st))}

    def _filestore_manifest(self, n: int, st: str) -> Iterator[bytes]:
        """The night's filestore manifest as filestore.encode_manifest writes it, compressed as it is made."""
        comp = zstandard.ZstdCompressor(level=3).compressobj()
        yield comp.compress(json.dumps({"version": 1, "database": DB, "stamp": st, "root": "/var/lib/odoo"},
                                       separators=(",", ":"))[:-1].encode() + b',"files":[')
        batch = []
        first = n * self.new
        for i in range(first, first + self.files):
            d = digest(i)
            batch.append(json.dumps([f"{d[:2]}/{d}", 20_000 + i % 5000, 1_700_000_000 + i, "sha1", d],
                                    separators=(",", ":")))
            if len(batch) == 2000:
                yield comp.compress(("," if i >= first + 2000 else "").encode() + ",".join(batch).encode())
                batch = []
        tail = ("," if batch and self.files > len(batch) else "") + ",".join(batch) + "]}"
        yield comp.compress(tail.encode()) + comp.flush()


def main(nights: int, files: int) -> dict[str, Any]:
    from bench import peak_rss_mb
    from odoo_stack_ops.backup import prune
    from odoo_stack_ops.backup.retention import RetentionPolicy

    base = peak_rss_mb()
    start = time.monotonic()
    bucket = GeneratedBucket(nights, files)
    plan = prune.plan(bucket, "bench", PREFIX, RetentionPolicy(days=30), NOW, last_run_ok=True, tz="UTC")
    objects = files + (bucket.total - 1) * bucket.new
    expected_doomed = 2 * bucket.new  # only the two deleted nights had them
    doomed = sum(1 for k in plan.delete_keys if "/objects/" in k)
    assert doomed == expected_doomed, (doomed, expected_doomed)  # the plan is right, not just small
    return {"prune_peak_rss_mb": round(peak_rss_mb(), 1), "prune_baseline_rss_mb": round(base, 1),
            "prune_nights": nights, "prune_files_per_night": files, "prune_objects_listed": objects,
            "prune_objects_deleted": doomed, "prune_s": round(time.monotonic() - start, 1)}


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(main(*(args or [30, 200_000]))))
