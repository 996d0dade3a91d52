"""Module upgrade steps that touch things: lock, code, facts from the container and database, odoo itself."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup.database import connect
from odoo_stack_ops.config import DatabaseConfig, StackConfig
from odoo_stack_ops.errors import CommandFailed, CommandTimeout, OpsError, VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.upgrade.plan import addon_hash, check_modules, check_ref, parse_manifest

log = logging.getLogger(__name__)
HASH_KEY = "odoo_stack_ops.addon_hash."
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b.*(registry|Failed|failed|Traceback|Error)")


@contextlib.contextmanager
def advisory_lock(db: DatabaseConfig, database: str, wait_s: float) -> Iterator[None]:
    """A PostgreSQL advisory lock per database, held for the whole upgrade (one at a time, even across workers)."""
    conn = connect(db, db.maintenance_db, autocommit=True)  # not `database`: a rollback drops and restores it
    try:
        deadline = time.monotonic() + wait_s
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"odoo-stack-ops:upgrade:{database}",)
                               ).fetchone()[0]:
            if time.monotonic() > deadline:
                raise OpsError(f"another module upgrade of {database} is running (advisory lock held); waited "
                               f"{wait_s:.0f} s. Try again when it has finished")
            time.sleep(1)
        yield
    finally:
        conn.close()  # closing the session releases the lock


def deploy_code(host: Executor, compose_dir: str, ref: str) -> list[str]:
    """Bring every git checkout under compose_dir/addons to `ref` (fetched first when there is a remote)."""
    check_ref(ref)
    found = host.run(["sh", "-c", 'for d in "$1"/addons/*/; do [ -d "$d/.git" ] && echo "$d"; done; true', "sh",
                      compose_dir]).stdout_text.split()
    for repo in found:
        host.run(["sh", "-c", 'cd "$1" && { git remote | grep -q . && git fetch --quiet --all --tags || true; } '
                  '&& git checkout --quiet --detach "$2"', "sh", repo, ref], timeout=600,
                 hint=f"check that {ref} exists in {repo}")
    return found


def find_manifests(container: Executor, paths: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in check_modules(names):
        for path in paths:
            r = container.run(["cat", f"{path}/{name}/__manifest__.py"], check=False, timeout=30)
            if r.ok:
                out[name] = parse_manifest(r.stdout_text)
                break
    return out


def list_addons(container: Executor, paths: list[str]) -> list[str]:
    r = container.run(["sh", "-c", 'for p in "$@"; do for m in "$p"/*/__manifest__.py; do [ -f "$m" ] && '
                       'basename "$(dirname "$m")"; done; done; true', "sh", *paths], timeout=60)
    return sorted({n for n in r.stdout_text.split() if re.match(r"^[a-z0-9_]+$", n)})


def addon_hashes(container: Executor, paths: list[str], names: list[str]) -> dict[str, str]:
    out = {}
    for name in check_modules(names):
        for path in paths:
            r = container.run(["sh", "-c", 'cd "$1" 2>/dev/null && find . -type f ! -path "*/.git/*" -exec '
                               'sha256sum {} +', "sh", f"{path}/{name}"], check=False, timeout=120)
            if r.ok and r.stdout.strip():
                out[name] = addon_hash(r.stdout_text)
                break
    return out


def module_states(db: DatabaseConfig, database: str) -> dict[str, str]:
    with connect(db, database) as conn:
        return dict(conn.execute("SELECT name, state FROM ir_module_module").fetchall())


def stored_hashes(db: DatabaseConfig, database: str) -> dict[str, str]:
    with connect(db, database) as conn:
        rows = conn.execute("SELECT key, value FROM ir_config_parameter WHERE key LIKE %s", (HASH_KEY + "%",))
        return {k.removeprefix(HASH_KEY): v for k, v in rows.fetchall()}


def store_hashes(db: DatabaseConfig, database: str, hashes: dict[str, str]) -> None:
    with connect(db, database) as conn:
        for name, digest in hashes.items():
            conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (HASH_KEY + name, digest))


def odoo_argv(cfg: StackConfig, database: str, install: list[str], upgrade: list[str]) -> list[str]:
    argv = ["odoo", "-c", cfg.odoo.config_file, "-d", database]
    if install:
        argv += ["-i", ",".join(check_modules(install))]
    if upgrade:
        argv += ["-u", ",".join(check_modules(upgrade))]
    return [*argv, "--stop-after-init", "--no-http"]


def run_odoo(container: Executor, cfg: StackConfig, database: str, install: list[str], upgrade: list[str],
             timeout_s: float, emit: Callable[[str], None]) -> list[str]:
    """Run odoo in the container, every log line to `emit`; returns error lines. Raises on exit != 0/timeout."""
    errors: list[str] = []
    argv = odoo_argv(cfg, database, install, upgrade)
    try:
        # the CA file is copied into the container so odoo's libpq can verify the server there too
        with pgtls.CAInContainer(container).stream(["sh", "-c", 'exec "$@" 2>&1', "sh", *argv],
                                                   env=cfg.database.libpq_env(database), timeout=timeout_s) as out:
            buf = b""
            for chunk in out:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    emit(line)
                    if ERROR_LINE.search(line):
                        errors.append(line)
    except CommandTimeout as exc:
        raise VerificationFailed(f"odoo did not finish within {timeout_s:.0f} s (hung upgrade)") from exc
    except CommandFailed as exc:
        raise VerificationFailed(f"odoo exited with code {exc.result.exit_code}: "
                                 + (" | ".join(errors[-3:]) or "no error line in its log")) from exc
    return errors


def check_states(db: DatabaseConfig, database: str, modules: list[str]) -> list[str]:
    states = module_states(db, database)
    return [f"{m} is {states.get(m, 'missing')}" for m in modules if states.get(m) != "installed"]


def wait_healthy(url: str, timeout_s: float) -> float:
    """Seconds until `url` answers 200; raises VerificationFailed at the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=5).status_code == 200:
                return round(time.monotonic() - start, 2)
        time.sleep(1)
    raise VerificationFailed(f"{url} did not answer 200 within {timeout_s:.0f} s")


def reset_module_states(db: DatabaseConfig, database: str) -> int:
    """The seed's runbook: modules stuck mid-way are put back (to install → uninstalled, to upgrade → installed)."""
    with connect(db, database) as conn:
        a = conn.execute("UPDATE ir_module_module SET state = 'uninstalled' WHERE state = 'to install'").rowcount
        b = conn.execute("UPDATE ir_module_module SET state = 'installed' WHERE state IN ('to upgrade', 'to remove')"
                         ).rowcount
        return a + b

