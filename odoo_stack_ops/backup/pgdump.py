"""PostgreSQL tool invocations and version rules (pure: argv lists and parsers, no I/O)."""

from __future__ import annotations

import re

from odoo_stack_ops.command import ensure_identifier

KEY_TABLES = ("res_users", "res_partner", "res_company", "ir_attachment", "ir_module_module", "ir_model")

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool_major(version_output: str) -> int:
    """Major version from `pg_dump --version` output ('pg_dump (PostgreSQL) 15.18 (Debian …)' → 15)."""
    m = _VERSION.search(version_output)
    if not m:
        raise ValueError(f"cannot read a PostgreSQL version from {version_output.strip()[:80]!r}")
    return int(m.group(1))


def server_major(server_version_num: int) -> int:
    """150010 → 15 (PostgreSQL >= 10 numbering)."""
    return server_version_num // 10000


def dump_compatible(tool: int, server: int) -> bool:
    """pg_dump can dump servers of its own major version and older, never newer ones."""
    return tool >= server


def pg_dump_argv(database: str, snapshot: str | None = None) -> list[str]:
    """Custom format, uncompressed (zstd compresses faster outside), read-consistent with `snapshot`."""
    argv = ["pg_dump", "--format=custom", "--compress=0", "--no-password", f"--dbname={ensure_identifier(database, 'database')}"]
    if snapshot:
        if not re.fullmatch(r"[0-9A-F-]+", snapshot):
            raise ValueError(f"unexpected snapshot id {snapshot!r}")
        argv.append(f"--snapshot={snapshot}")
    return argv


def pg_restore_argv(database: str, *, jobs: int = 1, source: str | None = None, no_owner: bool = True) -> list[str]:
    """Restore into an existing empty database; `source` None means stdin (then jobs must be 1)."""
    argv = ["pg_restore", "--no-password", "--exit-on-error", f"--dbname={ensure_identifier(database, 'database')}"]
    if no_owner:
        argv += ["--no-owner", "--no-acl"]
    if jobs > 1:
        if source is None:
            raise ValueError("parallel pg_restore needs a file, not stdin")
        argv.append(f"--jobs={jobs}")
    if source is not None:
        argv.append(source)
    return argv


def pg_restore_sql_argv(source: str | None = None) -> list[str]:
    """Turn a custom-format dump into a plain SQL script on stdout (Odoo's dump.sql)."""
    argv = ["pg_restore", "--no-owner", "--file=-"]
    if source is not None:
        argv.append(source)
    return argv


STATS_SQL = {
    "tables": """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg_toast%%'""",
    "schemas": """SELECT count(*) FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema')
                  AND nspname NOT LIKE 'pg_toast%%' AND nspname NOT LIKE 'pg_temp%%'""",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
}

MODULES_SQL = """SELECT name, coalesce(latest_version, '') FROM ir_module_module
                 WHERE state = 'installed' ORDER BY name"""

KEY_TABLES_SQL = """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s)"""
