"""Retention I/O: read what is published, let the pure planner decide, delete only what it says.

Memory stays bounded whatever the number of nights: manifests are read one at a time and keep only their
keys, the bucket listing streams page by page into the planner, and a filestore manifest is decoded as it
streams (its files are never held as a list): the planner keeps 64-bit ids, not key strings.
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import zstandard

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.retention import (
    GRACE,
    PACK,
    BackupRecord,
    Listed,
    RetentionPlan,
    RetentionPolicy,
    plan_retention,
)
from odoo_stack_ops.backup.spaces import delete_keys, explain, get_bytes, iter_objects, read_chunks
from odoo_stack_ops.errors import OpsError

log = logging.getLogger(__name__)


def load_records(s3: Any, bucket: str, prefix: str, needs: dict[str, str] | None = None) -> list[BackupRecord]:
    """Every published backup with the keys it owns and where its objects are listed; `needs` is filled with
    the age identity (fingerprints) each encrypted backup needs to be restored."""
    records = []
    for obj in iter_objects(s3, bucket, layout.manifests_prefix(prefix)):
        try:
            ref = mf.ManifestRef.from_key(obj["Key"])
            doc = mf.decode(get_bytes(s3, bucket, obj["Key"]))
            dump_key, fs_key = doc.dump.key, doc.filestore.manifest_key
        except ValueError as exc:  # pydantic's ValidationError included
            # its objects would look unreferenced: refuse to plan rather than delete what it may need
            raise OpsError(f"manifest {obj['Key']} is unreadable ({exc}); retention refuses to prune until it is "
                           f"fixed or removed by hand") from exc
        if needs is not None:
            needs[ref.key] = ", ".join(doc.encryption.fingerprints) or "none (not encrypted)"
        records.append(BackupRecord(
            key=ref.key, database=ref.database, taken_at=ref.taken_at, verified=doc.verified,
            data_keys=frozenset({ref.key, dump_key, fs_key}), filestore_key=fs_key, object_tag=doc.object_tag,
        ))
    return records


def listed(s3: Any, bucket: str, prefix: str, clock: list[datetime] | None = None) -> Iterator[Listed]:
    """Keys under `prefix` with their LastModified, page by page; `clock` receives the storage's own time (the
    first page's Date header), so ages can be measured against the storage clock too."""
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            if clock is not None and not clock:
                date = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
                if date:
                    when = parsedate_to_datetime(date)  # naive for "-0000": HTTP dates are UTC
                    clock.append(when if when.tzinfo else when.replace(tzinfo=UTC))
            for obj in page.get("Contents", []):
                yield Listed(obj["Key"], obj["LastModified"])
    except OpsError:
        raise
    except Exception as exc:
        raise explain(exc, bucket, prefix) from exc


def manifest_digests(chunks: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """What each file of a zstd filestore manifest references, parsed as the bytes stream in (pure): ("pack",
    pack id) for a packed file, (algo, digest) for a version-1 object.

    The document is `{..., "files": [[path, size, mtime, algo, digest(, pack, offset, length)], ...]}`; one entry
    at a time is decoded,
    so 200,000 files never become 200,000 lists."""
    text = _Text(chunks)
    text.expect("{")
    while not text.peek("}"):
        name = text.value()
        text.expect(":")
        if name == "files":
            text.expect("[")
            while not text.peek("]"):
                entry = text.value()
                if not isinstance(entry, list) or len(entry) not in (5, 8):
                    raise ValueError(f"unexpected filestore manifest entry {str(entry)[:80]}")
                if len(entry) == 8 and entry[5] is not None:
                    yield PACK, entry[5]  # version 2: the pack holding the file's blob
                else:
                    yield entry[3], entry[4]
                text.peek(",")
        else:
            text.value()
        text.peek(",")


class _Text:
    """A JSON token reader over decompressed, decoded chunks; values are decoded with the C scanner."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        dctx = zstandard.ZstdDecompressor().decompressobj()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        self._pieces = (utf8.decode(dctx.decompress(c)) for c in chunks)
        self._decoder = json.JSONDecoder()
        self._buf, self._pos, self._eof = "", 0, False

    def _fill(self) -> bool:
        piece = next(self._pieces, None)
        if piece is None:
            self._eof = True
            return False
        self._buf, self._pos = self._buf[self._pos:] + piece, 0
        return True

    def _skip(self) -> None:
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf) or not self._fill():
                return

    def peek(self, char: str) -> bool:
        """Consume `char` if it comes next."""
        self._skip()
        if self._buf.startswith(char, self._pos):
            self._pos += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.peek(char):
            raise ValueError(f"filestore manifest: expected {char!r} at {self._buf[self._pos:self._pos + 20]!r}")

    def value(self) -> Any:
        self._skip()
        while True:
            try:
                obj, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if self._eof or not self._fill():
                    raise
                continue
            if end == len(self._buf) and not self._eof and self._fill():
                continue  # a number may go on in the next chunk
            self._pos = end
            return obj


def plan(s3: Any, bucket: str, prefix: str, policy: RetentionPolicy, now: datetime, *, last_run_ok: bool,
         tz: str = "Asia/Singapore", needs: dict[str, str] | None = None, grace: timedelta = GRACE) -> RetentionPlan:
    """The retention plan for the bucket as listed now (see retention's module docstring for the rule)."""
    records = load_records(s3, bucket, prefix, needs)
    clock: list[datetime] = []
    data = [*listed(s3, bucket, f"{prefix}/db/", clock), *listed(s3, bucket, f"{prefix}/filestore/", clock)]

    def references(key: str) -> Iterator[tuple[str, str]]:
        try:
            yield from manifest_digests(read_chunks(s3, bucket, key))
        except (ValueError, zstandard.ZstdError) as exc:
            raise OpsError(f"filestore manifest {key} is unreadable ({exc}); retention refuses to prune until it "
                           f"is fixed or removed by hand") from exc

    return plan_retention(records, policy, now, last_run_ok=last_run_ok, listing=data,
                          objects=itertools.chain(listed(s3, bucket, layout.objects_prefix(prefix)),
                                                  listed(s3, bucket, layout.packs_prefix(prefix))),
                          references=references,
                          grace=grace, storage_now=clock[0] if clock else None, tz=ZoneInfo(tz))


def apply(s3: Any, bucket: str, retention: RetentionPlan) -> int:
    """Delete manifests first (a backup stops existing), then its data and unreferenced objects."""
    manifests = [k for k in retention.delete_keys if "/manifests/" in k]
    rest = [k for k in retention.delete_keys if "/manifests/" not in k]
    return delete_keys(s3, bucket, manifests) + delete_keys(s3, bucket, rest)
