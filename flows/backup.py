"""Flow `backup` (deployment `nightly`): the seed's Backup Strategy for the Odoo database and filestore.

Per database: dump → filestore → restore-verify → publish the manifest (last). Then retention, which
refuses to prune after a failed or unverified night. One database failing does not stop the others;
the run still ends Failed, posts to Mattermost and says what to do.

Flow `backup` (deployment `fleet`): every stack of the inventory's nightly as a subflow of one run, a few at
a time, so a fleet of small stacks pays one process start instead of one per stack.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.manifest import Manifest, Verification, summary_rows
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.locks import cluster_dump_slot, stack_writer
from odoo_stack_ops.notify import alerted, notify
from tasks.backup import assemble, backup_filestore, check_databases, dump_database, prepare_bucket, publish, verify
from tasks.common import logger, publish_markdown, publish_table
from tasks.fleet import over_stacks
from tasks.retention import apply_retention


def backup_one(cfg: StackConfig, database: str, st: str, *, run_verify: bool,
               keep_plain_copy: bool = False) -> tuple[Manifest, Path | None]:
    """One database end to end; returns its published manifest and, when asked to keep it (an upgrade's
    rollback restores from it), tonight's plaintext dump on this worker (the caller deletes its folder)."""
    started = datetime.now(UTC)
    with cluster_dump_slot(cfg):
        dump, facts, plain = dump_database(cfg, database, st)
    try:
        filestore, files = backup_filestore(cfg, database, st)
        parts = {"started": started, "facts": facts, "dump": dump, "filestore": filestore}
        if run_verify:
            unverified = assemble(cfg, database, st, finished=datetime.now(UTC), verification=Verification(), **parts)
            verification = verify(cfg, unverified, files, plain)
        else:
            verification = Verification(skipped=True, error="verification was not requested",
                                        problems=["verification was not requested"])
        manifest = assemble(cfg, database, st, finished=datetime.now(UTC), verification=verification, **parts)
        publish(cfg, manifest)
    except BaseException:
        shutil.rmtree(plain.parent, ignore_errors=True)
        raise
    if keep_plain_copy:
        return manifest, plain
    shutil.rmtree(plain.parent, ignore_errors=True)
    return manifest, None


def report(manifests: dict[str, Manifest], failures: dict[str, str], retention: dict[str, Any] | None) -> str:
    lines = ["# Nightly backup", ""]
    for db, m in manifests.items():
        verdict = "verified ✅" if m.verified else f"NOT verified ❌ — {m.verification.error}"
        lines += [f"## {db} — {verdict}", "", "| item | key | MiB stored | MiB raw/new | s | MiB/s |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['item']} | `{r['key']}` | {r['size_mib']} | {r['raw_mib']} | {r['seconds']} | {r['mib_per_s']} |"
                  for r in summary_rows(m)]
        lines.append("")
    for db, err in failures.items():
        lines += [f"## {db} — FAILED ❌", "", "```", err, "```", ""]
    if retention is not None:
        mode = "dry run" if retention["dry_run"] else f"{retention['deleted']} key(s) deleted"
        lines += [f"## Retention ({mode})", "", retention["skipped"] or "",
                  f"Backups to delete: {retention['delete_backups'] or 'none'}", ""]
    return "\n".join(lines)


@flow(name="backup", description="Odoo database + filestore to Spaces, verified by restore, 30-day retention")
def backup(
    stack_file: str | None = None,
    databases: list[str] | None = None,
    run_verify: bool = True,
    prune: bool = True,
    retention_dry_run: bool = False,
    stack: str | None = None,
) -> dict[str, Any]:
    """Back up each database; returns {database: manifest key}. Fails (after the others ran) if any failed."""
    log = logger()
    cfg = load_config(stack_file, stack=stack)
    dbs = check_databases(cfg, databases or cfg.backup.databases)
    with stack_writer(cfg, cfg.backup.lock_wait_s, "the nightly backup"):
        st = layout.stamp(datetime.now(UTC))
        for warning in prepare_bucket(cfg):
            log.warning("%s", warning)
            notify(cfg.mattermost, f"Backup bucket of {cfg.name} needs attention", warning)
        manifests: dict[str, Manifest] = {}
        failures: dict[str, str] = {}
        for db in dbs:
            try:
                manifests[db], _ = backup_one(cfg, db, st, run_verify=run_verify)
            except Exception as exc:  # noqa: BLE001 - isolate databases; re-raised below
                log.error("backup of %s failed: %s", db, exc)
                failures[db] = f"{type(exc).__name__}: {exc}"
        night_ok = not failures and all(m.verified for m in manifests.values())
        retention = apply_retention(cfg, last_run_ok=night_ok, dry_run=retention_dry_run) if prune else None
    publish_markdown("backup-nightly", report(manifests, failures, retention), f"backup {st} of {cfg.name}")
    if retention:
        publish_table("backup-retention-plan", retention["rows"], f"retention plan {st} of {cfg.name}")
    if not night_ok:
        problems = {**failures, **{db: m.verification.error or "not verified"
                                   for db, m in manifests.items() if not m.verified}}
        text = "\n".join(f"- {db}: {p}" for db, p in problems.items())
        sent = notify(cfg.mattermost, f"Backup {st} of {cfg.name} FAILED", text + "\nRetention did not prune. Check "
                      "the run's logs in Prefect, fix the cause, then re-run `prefect deployment run backup/nightly`.")
        raise OpsError(alerted(f"nightly backup {st} failed for {sorted(problems)}: " + "; ".join(
            f"{db}: {p}" for db, p in problems.items()), sent))
    return {db: layout.manifest_key(cfg.spaces.prefix, db, st) for db in manifests}


@flow(name="backup", description="Every stack's nightly backup in one run: stacks as subflows, a few at once")
def backup_fleet(
    stack_file: str | None = None,
    stacks: list[str] | None = None,
    max_parallel: int = 4,
    run_verify: bool = True,
    prune: bool = True,
    retention_dry_run: bool = False,
) -> dict[str, dict[str, Any]]:
    """The nightly of every stack of the inventory (or of `stacks`), at most `max_parallel` at once; each stack
    still takes its writer lock and a slot of its cluster's dump limit. Returns {stack: its backup's result};
    one stack failing does not stop the others, and the run fails at the end naming every failed stack."""
    return over_stacks(backup, {"run_verify": run_verify, "prune": prune, "retention_dry_run": retention_dry_run},
                       stack_file, stacks, max_parallel, "backup", "prefect deployment run backup/nightly-<stack>")
