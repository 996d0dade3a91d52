"""Retention I/O: read what is published, let the pure planner decide, delete only what it says."""

from __future__ import annotations

import logging
from typing import Any
from zoneinfo import ZoneInfo

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.filestore import decode_manifest
from odoo_stack_ops.backup.retention import BackupRecord, RetentionPlan, RetentionPolicy, plan_retention
from odoo_stack_ops.backup.spaces import delete_keys, get_bytes, iter_objects
from odoo_stack_ops.errors import OpsError

log = logging.getLogger(__name__)


def load_records(s3: Any, bucket: str, prefix: str, needs: dict[str, str] | None = None) -> list[BackupRecord]:
    """Every published backup with the keys it owns and the objects its filestore manifest references; `needs`
    is filled with the age identity (fingerprints) each encrypted backup needs to be restored."""
    records = []
    for obj in iter_objects(s3, bucket, layout.manifests_prefix(prefix)):
        try:
            ref = mf.ManifestRef.from_key(obj["Key"])
            doc = mf.decode(get_bytes(s3, bucket, obj["Key"]))
        except ValueError as exc:
            # its objects would look unreferenced: refuse to plan rather than delete what it may need
            raise OpsError(f"manifest {obj['Key']} is unreadable ({exc}); retention refuses to prune until it is "
                           f"fixed or removed by hand") from exc
        tag = doc.object_tag
        if needs is not None:
            needs[ref.key] = ", ".join(doc.encryption.fingerprints) or "none (not encrypted)"
        fs_key = doc.filestore.manifest_key
        files = decode_manifest(get_bytes(s3, bucket, fs_key))
        objects = frozenset(layout.object_key(prefix, f.algo, f.digest, tag) for f in files)
        records.append(BackupRecord(
            key=ref.key, database=ref.database, taken_at=ref.taken_at, verified=doc.verified,
            objects=objects, data_keys=frozenset({ref.key, doc.dump.key, fs_key}),
        ))
    return records


def all_object_keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    return {o["Key"] for o in iter_objects(s3, bucket, layout.objects_prefix(prefix))}


def plan(s3: Any, bucket: str, prefix: str, policy: RetentionPolicy, now: Any, *, last_run_ok: bool,
         tz: str = "Asia/Singapore", needs: dict[str, str] | None = None) -> RetentionPlan:
    records = load_records(s3, bucket, prefix, needs)
    return plan_retention(records, policy, now, last_run_ok=last_run_ok,
                          all_objects=all_object_keys(s3, bucket, prefix), tz=ZoneInfo(tz))


def apply(s3: Any, bucket: str, retention: RetentionPlan) -> int:
    """Delete manifests first (a backup stops existing), then its data and unreferenced objects."""
    manifests = [k for k in retention.delete_keys if "/manifests/" in k]
    rest = [k for k in retention.delete_keys if "/manifests/" not in k]
    return delete_keys(s3, bucket, manifests) + delete_keys(s3, bucket, rest)
