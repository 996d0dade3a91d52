"""The backup manifest (pure): what a night produced, written last so that its existence means "published"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from odoo_stack_ops.backup import layout

FORMAT = "odoo-stack-ops/backup-manifest/1"


def build_manifest(
    *, stack: str, database: str, st: str, started_at: datetime, finished_at: datetime, facts: dict[str, Any],
    dump: dict[str, Any], filestore: dict[str, Any], verification: dict[str, Any], encryption: dict[str, Any] | None,
) -> dict[str, Any]:
    """Assemble the manifest document. `verification["ok"]` decides whether this night is a restore point."""
    return {
        "format": FORMAT,
        "stack": stack,
        "database": database,
        "stamp": st,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "duration_s": round((finished_at - started_at).total_seconds(), 3),
        "server_version": facts.get("server_version"),
        "odoo_version": facts.get("odoo_version"),
        "modules": facts.get("modules", {}),
        "database_facts": {k: facts.get(k) for k in ("tables", "schemas", "large_objects", "row_counts")},
        "dump": dump,
        "filestore": filestore,
        "verification": verification,
        "verified": bool(verification.get("ok")),
        "encryption": encryption or {"enabled": False},
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


@dataclass(frozen=True)
class ManifestRef:
    """A published backup as listed from the bucket."""

    key: str
    database: str
    stamp: str
    taken_at: datetime

    @classmethod
    def from_key(cls, key: str) -> ManifestRef:
        database, st = layout.parse_manifest_key(key)
        return cls(key, database, st, layout.parse_stamp(st))


def decode(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if doc.get("format") != FORMAT:
        raise ValueError(f"not a backup manifest of this format: {doc.get('format')!r}")
    return doc


def summary_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the run artifact's table."""
    dump, fs, ver = manifest["dump"], manifest["filestore"], manifest["verification"]
    mib = 1024 * 1024
    return [
        {"item": "database dump", "key": dump["key"], "size_mib": round(dump["stored_bytes"] / mib, 2),
         "raw_mib": round(dump["raw_bytes"] / mib, 2), "seconds": dump["duration_s"],
         "mib_per_s": round(dump["raw_bytes"] / mib / max(dump["duration_s"], 1e-6), 1)},
        {"item": "filestore", "key": fs["manifest_key"], "size_mib": round(fs["bytes"] / mib, 2),
         "raw_mib": round(fs["new_bytes"] / mib, 2), "seconds": fs["duration_s"],
         "mib_per_s": round(fs["new_bytes"] / mib / max(fs["duration_s"], 1e-6), 1)},
        {"item": "verification", "key": "ok" if ver.get("ok") else f"FAILED: {ver.get('error', '')}"[:200],
         "size_mib": None, "raw_mib": None, "seconds": ver.get("duration_s"), "mib_per_s": None},
    ]
