"""Event history in Spaces beside the backups: one small JSON document per upgrade (plan, outcome, downtime) and
per restore drill (time to recover), kept under `{prefix}/history/{kind}/`, which retention never lists.

Read back by the weekly report; the backups' own history is their manifests."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.spaces import Bucket

log = logging.getLogger(__name__)

KINDS = ("upgrades", "drills")


def history_prefix(prefix: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}")
    return f"{prefix}/history/{kind}/"


def history_key(prefix: str, kind: str, when: datetime, name: str = "") -> str:
    """`{prefix}/history/{kind}/{stamp}[-{name}].json`: keys sort by time (pure)."""
    return f"{history_prefix(prefix, kind)}{layout.stamp(when)}{'-' + name if name else ''}.json"


def record(bucket: Bucket, kind: str, doc: dict[str, Any], name: str = "") -> str | None:
    """Store one event; returns its key. Never raises: a lost history entry must not fail the run it records."""
    when = datetime.now(UTC)
    key = history_key(bucket.prefix, kind, when, name)
    try:
        bucket.put_bytes(key, json.dumps({"at": when.isoformat(), **doc}, default=str).encode(), "application/json")
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        log.warning("%s history not recorded in Spaces (%s)", kind, type(exc).__name__)
        return None
    return key


def read(bucket: Bucket, kind: str, since: datetime) -> list[dict[str, Any]]:
    """Events of `kind` recorded at or after `since`, oldest first (the stamp in the key decides)."""
    docs = []
    for obj in bucket.iter_objects(history_prefix(bucket.prefix, kind)):
        stamp = obj["Key"].rsplit("/", 1)[-1][:16]
        try:
            taken = layout.parse_stamp(stamp)
        except ValueError:
            continue
        if taken >= since:
            docs.append(json.loads(bucket.get_bytes(obj["Key"])))
    return sorted(docs, key=lambda d: d.get("at", ""))
