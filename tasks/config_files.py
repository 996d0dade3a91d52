"""Config-file tasks: collect the stack's config files from the droplet (redacted), commit them when they change."""

from __future__ import annotations

from typing import Any

from prefect import task

from odoo_stack_ops import config_backup as cb
from odoo_stack_ops import shared_state
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.gitops import repo_for
from tasks.common import TRANSIENT_RETRIES, logger

REPO_DIR = "config-repo"
KEY_FILE = "config-backup.key"  # the key before it was shared: carried into the Secret block once


@task(name="collect-config-files", **TRANSIENT_RETRIES)
def collect_config_files(cfg: StackConfig, compose_dir: str | None = None) -> dict[str, str]:
    """{stack/<path>: redacted text} from the compose directory on the droplet (through the host executor)."""
    key = shared_state.fingerprint_key(cfg, legacy_file=cfg.state_dir / KEY_FILE)
    directory = compose_dir or cfg.odoo.compose_dir
    with Connections(cfg) as conns:
        files = cb.collect(conns.host(), directory, key)
    logger().info("collected %d config file(s) from %s: %s", len(files), directory, ", ".join(files))
    return files


@task(name="commit-config-files", **TRANSIENT_RETRIES)
def commit_config_files(cfg: StackConfig, files: dict[str, str]) -> dict[str, Any]:
    """One commit for the whole change set, pushed; nothing when no file changed. Idempotent, so retryable."""
    repo = repo_for(cfg, cfg.git.config_remote, REPO_DIR)
    with repo.locked():
        repo.sync()
        changed, message = cb.change_message(repo.read(cb.REPO_PREFIX), files)
        repo.replace(files, cb.REPO_PREFIX)
        committed = bool(changed) and repo.commit_if_changed(message)
        if committed:
            repo.push()
    logger().info("config backup: %s", message.strip() if committed else "no change")
    return {"committed": committed, "changed": changed, "files": sorted(files)}
