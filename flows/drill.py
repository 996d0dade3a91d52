"""Flow `restore-drill` (deployment `weekly`): the proof that a backup comes back WITH the age identity.

The nightly verification needs no private key (it restores tonight's plaintext copy), so the identity may stay
offline. Once a week an operator-provided identity (BACKUP_AGE_IDENTITY or a Secret block) is used here: per
database the newest verified backup is downloaded, checked, decrypted and restored through the one restore path
(tasks/restore.py) into a scratch `drill_<stack tag>_<database>` with its filestore, compared with its manifest
(tables, rows, modules, every filestore file by path and hash), timed (time to recover), and dropped again.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task

from odoo_stack_ops import history
from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup.database import connect, read_facts
from odoo_stack_ops.backup.filestore import StoredFile
from odoo_stack_ops.backup.manifest import Manifest
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.backup.verify import compare_facts, scratch_tag
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.notify import alerted, notify
from tasks.common import NO_RETRIES, logger, publish_markdown
from tasks.restore import drop_copy, pick_backup, restore_as

DRILL_PREFIX = "drill_"
# restore_as works on `<target>__restoring_<stamp>` (28 more bytes): a target this short keeps those names whole
TARGET_MAX = 63 - len("__restoring_") - len("20260101t020000z")
IDENTITY_BLOCK = "backup-age-identity"  # the Secret block deployments.setup saves from BACKUP_AGE_IDENTITY


def drill_target(stack: str, database: str) -> str:
    """The drill's scratch database for `database` of `stack` (pure): `drill_<tag>_<database>`, obviously a drill,
    tagged with the stack (as verification's scratch names) so two stacks on one cluster never meet; a long
    database name is cut and suffixed with its own hash."""
    ensure_identifier(database, "database")
    head = f"{DRILL_PREFIX}{scratch_tag(stack)}_"
    room = TARGET_MAX - len(head)
    db = database
    if len(db) > room:
        db = f"{db[:room - 9]}_{hashlib.sha256(database.encode()).hexdigest()[:8]}"
    return ensure_identifier(head + db, "drill database")


def served_databases(cfg: StackConfig) -> set[str]:
    """Every database name the stack serves or backs up (pure): a drill must never restore under one of them."""
    return {cfg.database.name, *cfg.database.databases, *cfg.backup.databases, cfg.restore.staging_database}


def leftover_copies(names: list[str], target: str) -> list[str]:
    """Copies of `target` a killed drill left (pure): `<target>__restoring|before|failed_<stamp>`."""
    pattern = re.compile(rf"^{re.escape(target)}__(restoring|before|failed)_\d{{8}}t\d{{6}}z$")
    return sorted(n for n in names if pattern.match(n))


def identity_missing(manifest: Manifest) -> str:
    """What to tell an operator whose drill has no key for an encrypted backup (pure)."""
    return (f"backup {manifest.database}/{manifest.stamp} is encrypted for {manifest.encryption.fingerprints} and "
            "this worker has no age identity, so the drill cannot decrypt it. Put the private key (the "
            "AGE-SECRET-KEY-1… line of the file age-keygen wrote) where the drill's worker reads it: the "
            "BACKUP_AGE_IDENTITY environment variable, or a Prefect Secret block (`python -m deployments.setup` "
            f"saves BACKUP_AGE_IDENTITY as the block {IDENTITY_BLOCK!r}) named in the stack file as "
            f"`backup: {{age_identity: prefect-secret:{IDENTITY_BLOCK}}}`")


def compare_files(expected: list[StoredFile], on_disk: dict[str, str]) -> list[str]:
    """Differences between the backup's filestore list and {path: hex digest} read back from disk (pure)."""
    problems = []
    want = {f.path: f.digest for f in expected}
    missing = sorted(set(want) - set(on_disk))
    extra = sorted(set(on_disk) - set(want))
    wrong = sorted(p for p in set(want) & set(on_disk) if want[p] != on_disk[p])
    if missing:
        problems.append(f"{len(missing)} filestore file(s) missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} filestore file(s) not in the backup, e.g. {extra[:3]}")
    if wrong:
        problems.append(f"{len(wrong)} filestore file(s) with another hash, e.g. {wrong[:3]}")
    return problems


def parse_sums(text: str) -> dict[str, str]:
    """`<digest>  ./<path>` lines of sha1sum/sha256sum run in the filestore root → {path: digest} (pure)."""
    sums = {}
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            sums[path.removeprefix("./")] = digest
    return sums


# a filestore directory that never came back is "every file missing", not a failed command
SUMS_SH = '[ -d "$1" ] || exit 0; cd "$1" && find . -type f -exec "$2" {} +'


@task(name="drop-drill-leftovers", **NO_RETRIES)
def drop_leftovers(cfg: StackConfig, target: str) -> list[str]:
    """Drop the copies of `target` a killed drill left behind (none that a session uses). Returns their names."""
    with connect(cfg.database, cfg.database.maintenance_db, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                            (target,))]
        in_use = {r[0] for r in conn.execute("SELECT DISTINCT datname FROM pg_stat_activity "
                                             "WHERE starts_with(datname, %s) AND pid <> pg_backend_pid()", (target,))}
    stale = [n for n in leftover_copies(names, target) if n not in in_use]
    for name in stale:
        drop_copy(cfg, name, True)
    if stale:
        logger().warning("dropped copies an interrupted drill left behind: %s", stale)
    return stale


@task(name="drill-check", **NO_RETRIES)
def check_restored(cfg: StackConfig, manifest: Manifest, target: str) -> int:
    """The drill copy holds what the manifest recorded (tables, rows, modules) and every filestore file, each
    with its recorded hash, is on disk. Returns the number of files; raises VerificationFailed."""
    with connect(cfg.database, target) as conn, conn.cursor() as cur:
        problems = compare_facts(manifest, read_facts(cur, conn.info.server_version).as_dict())
    expected = rs.filestore_files(Bucket.open(cfg.spaces), manifest)
    if len(expected) != manifest.filestore.files:
        problems.append(f"the filestore list has {len(expected)} files, the manifest says {manifest.filestore.files}")
    root = rs.filestore_root(cfg.odoo.data_dir, target)
    on_disk: dict[str, str] = {}
    with Connections(cfg) as conns:
        container = conns.container("odoo-core")
        algo_of = {f.path: f.algo for f in expected}
        for algo in sorted(set(algo_of.values()) or {"sha1"}):
            out = container.run(["sh", "-c", SUMS_SH, "sh", root, f"{algo}sum"], timeout=6 * 3600).stdout_text
            on_disk |= {p: d for p, d in parse_sums(out).items() if algo_of.get(p, algo) == algo}
    problems += compare_files(expected, on_disk)
    if problems:
        raise VerificationFailed(f"the drill copy of {manifest.database}/{manifest.stamp} differs from the backup: "
                                 + "; ".join(problems[:5]))
    logger().info("drill copy %s matches the manifest: tables, rows, modules and %d filestore files", target,
                  len(on_disk))
    return len(on_disk)


@dataclass(frozen=True)
class DrillResult:
    """One database's drill: which backup, how old it was, how long it took to get it back, how many files."""

    database: str
    backup: str
    backup_age_h: float
    encrypted: bool
    recover_s: float
    files: int


def drill_one(cfg: StackConfig, database: str, jobs: int = 2) -> DrillResult:
    """Restore `database`'s newest verified backup into its drill database, check it, time it, and drop it again
    whatever happened. Raises naming the backup when any step fails."""
    target = drill_target(cfg.name, database)
    if target in served_databases(cfg):
        raise OpsError(f"the drill database {target} is one the stack serves; rename it before drilling")
    manifest = pick_backup(cfg, database)
    if manifest.encryption.enabled and cfg.backup.age_identity is None:
        raise OpsError(identity_missing(manifest))
    st = layout.stamp(datetime.now(UTC))
    names = [target, rs.copy_name(target, "restoring", st), rs.copy_name(target, "before", st)]
    drop_leftovers(cfg, target)
    passed = False
    try:
        started = time.monotonic()
        # overwrite: last week's copy, if a killed run left it, is swapped out as `before` and dropped below
        restore_as(cfg, manifest, target, st, overwrite=True, jobs=jobs, filestore=True)
        files = check_restored(cfg, manifest, target)
        recover_s = round(time.monotonic() - started, 3)
        passed = True
    except Exception as exc:
        raise OpsError(f"drill of backup {database}/{manifest.stamp} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _drop_all(cfg, names, raise_errors=passed)
    age_h = (datetime.now(UTC) - manifest.finished_at).total_seconds() / 3600
    return DrillResult(database, manifest.stamp, round(age_h, 1), manifest.encryption.enabled, recover_s, files)


def _drop_all(cfg: StackConfig, names: list[str], *, raise_errors: bool) -> None:
    """Drop the drill copies (databases and filestores); a copy that could not be dropped fails a passed drill
    (it would be left behind) and is only logged beside the failure of a failed one."""
    errors = []
    for name in names:
        try:
            drop_copy(cfg, name, True)
        except Exception as exc:  # noqa: BLE001 - try every name, report together
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    if errors and raise_errors:
        raise OpsError(f"the drill passed but left copies behind; drop them by hand: {'; '.join(errors)}")
    if errors:
        logger().error("could not drop drill copies: %s", "; ".join(errors))


def report(results: dict[str, DrillResult], failures: dict[str, str]) -> str:
    lines = ["# Restore drill", "", "| database | backup | backup age | encrypted | time to recover | files | verdict |",
             "|---|---|---|---|---|---|---|"]
    for db, r in results.items():
        lines.append(f"| {db} | `{r.backup}` | {r.backup_age_h:g} h | {'yes' if r.encrypted else 'no'} | "
                     f"{r.recover_s:.1f} s | {r.files} | passed ✅ |")
    for db in failures:
        lines.append(f"| {db} | | | | | | FAILED ❌ |")
    for db, err in failures.items():
        lines += ["", f"## {db} — FAILED ❌", "", "```", err, "```"]
    return "\n".join(lines) + "\n"


@flow(name="restore-drill", description="Weekly: the newest backup of each database restored end to end with the "
      "age identity into a scratch database, checked against its manifest, timed, dropped")
def restore_drill(stack_file: str | None = None, databases: list[str] | None = None, jobs: int = 2,
                  stack: str | None = None) -> dict[str, Any]:
    """Drill each database (all of them, even after one failed); returns {database: result}. Fails if any failed."""
    log = logger()
    cfg = load_config(stack_file, stack=stack)
    # No writer lock: the drill only reads the bucket and writes its own drill_* names, never a served database
    # or the bucket, so holding the stack's lock would only hold the nightly backup up for a whole restore.
    results: dict[str, DrillResult] = {}
    failures: dict[str, str] = {}
    for db in databases or cfg.backup.databases:
        try:
            results[db] = drill_one(cfg, db, jobs)
            log.info("drill of %s passed: backup %s recovered in %.1f s with %d files", db, results[db].backup,
                     results[db].recover_s, results[db].files)
        except Exception as exc:  # noqa: BLE001 - isolate databases; re-raised below
            log.error("drill of %s failed: %s", db, exc)
            failures[db] = f"{type(exc).__name__}: {exc}"
    publish_markdown("restore-drill", report(results, failures), f"restore drill of {cfg.name}")
    for r in results.values():  # the weekly report's time to recover
        history.record(Bucket.open(cfg.spaces), "drills", {"stack": cfg.name, **vars(r)}, r.database)
    if failures:
        text = "\n".join(f"- {db}: {err}" for db, err in failures.items())
        sent = notify(cfg.mattermost, f"Restore drill of {cfg.name} FAILED", text + "\nThe backups may not restore: "
                      "check the run's logs in Prefect, fix the cause, then `prefect deployment run restore-drill/weekly`.")
        raise OpsError(alerted(f"restore drill failed for {sorted(failures)}: " + "; ".join(
            f"{db}: {err}" for db, err in failures.items()), sent))
    return {db: vars(r) for db, r in results.items()}
