"""The backup manifest (pure): what a night produced, written last so that its existence means "published".

One typed model for every reader (restore, rollback, verification, retention, reports); the JSON on disk is
the same document a person reads by hand at 3 a.m.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from odoo_stack_ops.backup import layout

FORMAT = "odoo-stack-ops/backup-manifest/1"


class _Part(BaseModel):
    # extra keys are kept: a newer writer may add facts an older reader must carry through untouched
    model_config = ConfigDict(extra="allow", frozen=True)


class DumpRecord(_Part):
    """The database dump object: stored (compressed, maybe encrypted) and plaintext (custom format) hashes."""

    key: str
    raw_bytes: int
    raw_sha256: str
    stored_bytes: int
    stored_sha256: str
    parts: int = 0
    duration_s: float = 0.0
    pg_dump_version: str = ""
    compression: str = "zstd"


class FilestoreRecord(_Part):
    """The night's filestore manifest and what uploading it cost."""

    manifest_key: str
    files: int = 0
    bytes: int = 0
    new_objects: int = 0
    new_bytes: int = 0
    read_files: int = 0
    packs: int = 0  # new packs written (0 for nights before packs, or with nothing new)
    repacked_files: int = 0  # of read_files: kept files read again to leave a mostly-deleted pack behind
    repacked_bytes: int = 0
    duration_s: float = 0.0


class Encryption(_Part):
    enabled: bool = False
    format: str | None = None
    recipients: list[str] = Field(default_factory=list)
    fingerprints: list[str] = Field(default_factory=list)
    object_tag: str | None = None


class Verification(_Part):
    """How the backup was proven restorable; `ok` decides whether it is a restore point."""

    ok: bool = False
    skipped: bool = False
    error: str | None = None
    problems: list[str] = Field(default_factory=list)
    mode: str | None = None
    scratch_database: str | None = None
    server: str | None = None
    restored: dict[str, Any] | None = None
    filestore_sampled: int | None = None
    duration_s: float | None = None


class DatabaseFacts(_Part):
    tables: int | None = None
    schemas: int | None = None
    large_objects: int | None = None
    row_counts: dict[str, int] = Field(default_factory=dict)


class Manifest(_Part):
    """A published backup of one database."""

    format: str = FORMAT
    stack: str
    database: str
    stamp: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    server_version: str | None = None
    odoo_version: str | None = None
    modules: dict[str, str] = Field(default_factory=dict)
    database_facts: DatabaseFacts = Field(default_factory=DatabaseFacts)
    dump: DumpRecord
    filestore: FilestoreRecord
    verification: Verification = Field(default_factory=Verification)
    verified: bool = False
    encryption: Encryption = Field(default_factory=Encryption)

    @property
    def object_tag(self) -> str | None:
        return self.encryption.object_tag if self.encryption.enabled else None

    def with_verification(self, verification: Verification) -> Manifest:
        return self.model_copy(update={"verification": verification, "verified": verification.ok})


def build_manifest(
    *, stack: str, database: str, st: str, started_at: datetime, finished_at: datetime, facts: dict[str, Any],
    dump: DumpRecord, filestore: FilestoreRecord, verification: Verification, encryption: Encryption | None,
) -> Manifest:
    """Assemble the manifest. `verification.ok` decides whether this night is a restore point."""
    return Manifest(
        stack=stack, database=database, stamp=st, started_at=started_at, finished_at=finished_at,
        duration_s=round((finished_at - started_at).total_seconds(), 3),
        server_version=facts.get("server_version"), odoo_version=facts.get("odoo_version"),
        modules=facts.get("modules", {}),
        database_facts=DatabaseFacts(**{k: facts.get(k) for k in ("tables", "schemas", "large_objects")},
                                     row_counts=facts.get("row_counts") or {}),
        dump=dump, filestore=filestore, verification=verification, verified=verification.ok,
        encryption=encryption or Encryption(),
    )


def encode(manifest: Manifest) -> bytes:
    return manifest.model_dump_json(indent=2).encode()


def decode(data: bytes) -> Manifest:
    """Raises ValueError for a document that is not a manifest of this format."""
    import json  # noqa: PLC0415

    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a backup manifest of this format: {doc.get('format') if isinstance(doc, dict) else doc!r}")
    return Manifest.model_validate(doc)


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


def summary_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """Rows for the run artifact's table."""
    dump, fs, ver = manifest.dump, manifest.filestore, manifest.verification
    mib = 1024 * 1024
    ran = not ver.skipped and ver.duration_s is not None
    return [
        {"item": "database dump", "key": dump.key, "size_mib": round(dump.stored_bytes / mib, 2),
         "raw_mib": round(dump.raw_bytes / mib, 2), "seconds": dump.duration_s,
         "mib_per_s": round(dump.raw_bytes / mib / max(dump.duration_s, 1e-6), 1)},
        {"item": "filestore", "key": fs.manifest_key, "size_mib": round(fs.bytes / mib, 2),
         "raw_mib": round(fs.new_bytes / mib, 2), "seconds": fs.duration_s,
         "mib_per_s": round(fs.new_bytes / mib / max(fs.duration_s, 1e-6), 1)},
        {"item": "verification", "key": "ok" if ver.ok else f"FAILED: {ver.error or ''}"[:200],
         # what it read: the stored object re-hashed, the plaintext dump restored
         "size_mib": round(dump.stored_bytes / mib, 2) if ran else None,
         "raw_mib": round(dump.raw_bytes / mib, 2) if ran else None, "seconds": ver.duration_s,
         "mib_per_s": round(dump.raw_bytes / mib / max(ver.duration_s or 0, 1e-6), 1) if ran else None},
    ]
