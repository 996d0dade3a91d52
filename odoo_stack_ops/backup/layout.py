"""Where each piece of a backup lives in the bucket (pure).

    {prefix}/db/{database}/{stamp}.dump.zst[.age]     custom-format dump, zstd (then age) compressed
    {prefix}/filestore/{database}/{stamp}.json.zst    the night's filestore manifest (path -> object)
    {prefix}/packs/{xx}/{id}                          filestore packs: blobs of many files, shared by nights
    {prefix}/objects/{algo}/{xx}/{digest}[.{tag}.age] filestore objects of the earlier format (read, not written)
    {prefix}/manifests/{database}/{stamp}.json        written last: a backup exists only when this exists
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP = re.compile(r"^\d{8}T\d{6}Z\Z")


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_stamp(value: str) -> datetime:
    if not _STAMP.match(value):
        raise ValueError(f"not a backup stamp: {value!r}")
    return datetime.strptime(value, STAMP_FORMAT).replace(tzinfo=UTC)


def dump_key(prefix: str, database: str, st: str, encrypted: bool = False) -> str:
    return f"{prefix}/db/{database}/{st}.dump.zst" + (".age" if encrypted else "")


def filestore_manifest_key(prefix: str, database: str, st: str) -> str:
    return f"{prefix}/filestore/{database}/{st}.json.zst"


def manifest_key(prefix: str, database: str, st: str) -> str:
    return f"{prefix}/manifests/{database}/{st}.json"


def manifests_prefix(prefix: str, database: str | None = None) -> str:
    return f"{prefix}/manifests/" + (f"{database}/" if database else "")


def objects_prefix(prefix: str) -> str:
    return f"{prefix}/objects/"


def packs_prefix(prefix: str) -> str:
    return f"{prefix}/packs/"


def pack_key(prefix: str, pack: str) -> str:
    return f"{prefix}/packs/{pack[:2]}/{pack}"


def object_key(prefix: str, algo: str, digest: str, tag: str | None = None) -> str:
    """Content address of a filestore object; `tag` names the recipient set of an encrypted copy, so a key
    rotation re-uploads each object once for the new keys and old backups keep theirs."""
    return f"{prefix}/objects/{algo}/{digest[:2]}/{digest}" + (f".{tag}.age" if tag else "")


def parse_manifest_key(key: str) -> tuple[str, str]:
    """(database, stamp) of a manifest key."""
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not parts[2].endswith(".json"):
        raise ValueError(f"not a manifest key: {key!r}")
    st = parts[2].removesuffix(".json")
    parse_stamp(st)
    return parts[1], st
