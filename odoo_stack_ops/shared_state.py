"""State every worker of a stack sees: alert states and the config-backup fingerprint key.

With several workers on one pool, a sweep may run on any of them: state kept in one worker's `state_dir` makes
an alert fire twice or never resolve. So a named state lives in PostgreSQL next to ops.logs (`ops.state`, one
row per stack and name, held with a row lock for the read-modify-write), and the fingerprint key in a Prefect
Secret block. Only when no logs database is configured (one worker) does it fall back to a file in `state_dir`
with a file lock. `state_dir` otherwise holds caches a worker can rebuild (git working clones).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from odoo_stack_ops import redact
from odoo_stack_ops.config import StackConfig

log = logging.getLogger(__name__)

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {schema}.state (
    stack       text NOT NULL,
    name        text NOT NULL,
    value       jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stack, name)
)"""


@dataclass
class Slot:
    """One named state while it is held: `text` as stored (None: never saved), `save()` to replace it."""

    text: str | None
    saved: str | None = None

    def save(self, text: str) -> None:
        self.saved = text


def where(cfg: StackConfig) -> str:
    """Where this stack's shared state lives, for logs and check-config."""
    if cfg.supabase.db_dsn is not None:
        return f"PostgreSQL {cfg.supabase.schema_name}.state (every worker)"
    return f"{cfg.state_dir} (this worker only: set SUPABASE_DB_URL for several workers)"


@contextlib.contextmanager
def held(cfg: StackConfig, name: str, timeout_s: float = 60.0) -> Iterator[Slot]:
    """Hold the state `name` of this stack for a read-modify-write; what was `save()`d is written on a clean exit.

    A second holder (another worker's sweep) waits up to timeout_s, then fails with TimeoutError."""
    if cfg.supabase.db_dsn is None:
        with _held_file(cfg.state_dir.expanduser() / f"{name}.json", timeout_s) as slot:
            yield slot
        return
    with _held_row(cfg, cfg.supabase.db_dsn.get_secret_value(), name, timeout_s) as slot:
        yield slot


@contextlib.contextmanager
def _held_row(cfg: StackConfig, dsn: str, name: str, timeout_s: float) -> Iterator[Slot]:
    from odoo_stack_ops.logs.sink_pg import tls_params  # noqa: PLC0415 - the logs sink owns the DSN's TLS rules

    schema = sql.Identifier(cfg.supabase.schema_name)
    table = sql.SQL("{}.state").format(schema)
    key = (cfg.name, name)
    with psycopg.connect(**tls_params(dsn), autocommit=True) as conn:
        _ensure_table(conn, schema)
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms")))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("INSERT INTO {} (stack, name) VALUES (%s, %s) ON CONFLICT DO NOTHING")
                             .format(table), key)
                row = conn.execute(sql.SQL("SELECT value::text FROM {} WHERE stack = %s AND name = %s FOR UPDATE")
                                   .format(table), key).fetchone()
                slot = Slot(row[0] if row else None)
                if slot.text is None:
                    slot.text = _local_text(cfg, name)  # first use after a single-worker install: carry its state
                yield slot
                if slot.saved is not None:
                    conn.execute(sql.SQL("UPDATE {} SET value = %s::jsonb, updated_at = now() "
                                         "WHERE stack = %s AND name = %s").format(table), (slot.saved, *key))
        except psycopg.errors.LockNotAvailable:
            raise TimeoutError(f"another run holds the shared state {name!r} of {cfg.name} for more than "
                               f"{timeout_s:g} s") from None


def _ensure_table(conn: psycopg.Connection[Any], schema: sql.Identifier) -> None:
    """Idempotent; two workers creating it at the same moment race on the catalog, so the loser tries again."""
    for attempt in range(3):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                conn.execute(sql.SQL(TABLE_SQL).format(schema=schema))
            return
        except psycopg.errors.UniqueViolation:
            if attempt == 2:
                raise
            time.sleep(0.1)


def _local_text(cfg: StackConfig, name: str) -> str | None:
    path = cfg.state_dir.expanduser() / f"{name}.json"
    return path.read_text() if path.is_file() else None


@contextlib.contextmanager
def _held_file(path: Path, timeout_s: float) -> Iterator[Slot]:
    with _flock(path, timeout_s):
        slot = Slot(path.read_text() if path.exists() else None)
        yield slot
        if slot.saved is not None:
            write_atomically(path, slot.saved)


@contextlib.contextmanager
def _flock(path: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive lock beside the state file, so two runs on this worker never interleave load and save."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another run holds {path}.lock for more than {timeout_s:g} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str) -> None:
    """A temporary file in the same directory, fsync, rename over the old one: a crash leaves old or new."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def key_block_name(stack: str) -> str:
    """Prefect block names allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{stack}-config-fingerprint-key".lower()).strip("-")


def fingerprint_key(cfg: StackConfig, legacy_file: Path | None = None) -> bytes:
    """The stack's config-backup fingerprint key, the same on every worker: a Prefect Secret block created once.

    A worker that had a key file from before keeps its fingerprints (the block is created from that file), so
    moving to shared state does not re-mark every redacted value in git. Two workers creating the block at the
    same moment: the one that loses reads the winner's."""
    from prefect.blocks.system import Secret  # noqa: PLC0415 - Prefect's client only where the key is needed

    name = key_block_name(cfg.name)
    with contextlib.suppress(ValueError):  # ValueError: no such block yet
        return _registered(bytes.fromhex(Secret.load(name).get()))  # type: ignore[union-attr]
    legacy = legacy_file.expanduser() if legacy_file else None
    key = legacy.read_bytes() if legacy and legacy.is_file() else secrets.token_bytes(32)
    try:
        Secret(value=key.hex()).save(name, overwrite=False)
        log.info("created the Prefect Secret block %s (config-backup fingerprint key shared by every worker)", name)
    except ValueError:  # Prefect's answer when the name is taken: another worker was first
        return _registered(bytes.fromhex(Secret.load(name).get()))  # type: ignore[union-attr]
    return _registered(key)


def _registered(key: bytes) -> bytes:
    redact.register(key.hex())
    return key
