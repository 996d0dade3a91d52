"""Flow `config-backup` (hourly): the stack's config files to git on change (Backup Strategy: config files,
on change, unlimited, Git). Secret values in .env and odoo.conf are redacted; keys are kept."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.config_backup import collect
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.gitops import repo_for
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, publish_markdown


@task(name="collect-config-files", **TRANSIENT_RETRIES)
def collect_files(cfg: StackConfig) -> dict[str, str]:
    with Connections(cfg) as conns:
        return collect(conns.host(), cfg.odoo.compose_dir)


@task(name="commit-config-files", **NO_RETRIES)
def commit_files(cfg: StackConfig, files: dict[str, str]) -> dict[str, Any]:
    repo = repo_for(cfg, cfg.git.config_remote, "config-repo")
    repo.sync()
    old = repo.read("stack/")
    changed = sorted(k for k in set(old) | set(files) if old.get(k) != files.get(k))
    repo.replace(files, "stack/")
    committed = repo.commit_if_changed("config files changed: " + ", ".join(c.removeprefix("stack/") for c in changed))
    if committed:
        repo.push()
    return {"committed": committed, "changed": changed, "files": sorted(files)}


@flow(name="config-backup", description="docker-compose.yml, odoo.conf, nginx, .env (redacted) to git on change")
def config_backup(stack_file: str | None = None) -> dict[str, Any]:
    cfg = load_config(stack_file)
    out = commit_files(cfg, collect_files(cfg))
    publish_markdown("config-backup", f"# Config backup\n\n- committed: {out['committed']}\n- changed: {out['changed']}",
                     f"config backup of {cfg.name}")
    return out
