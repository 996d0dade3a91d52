"""Flow `config-backup` (deployment `hourly`): the seed's Backup Strategy row "Config files — on change —
unlimited — Git". docker-compose.yml, config/odoo.conf, nginx configuration and .env are read from the droplet;
secret values are redacted (keys kept) before anything is written; one commit per change set, none without one.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from odoo_stack_ops.config import load_config
from tasks.common import publish_markdown
from tasks.config_files import collect_config_files, commit_config_files


@flow(name="config-backup", description="docker-compose.yml, odoo.conf, nginx, .env (values redacted) to git on change")
def config_backup(stack_file: str | None = None, compose_dir: str | None = None,
                  stack: str | None = None) -> dict[str, Any]:
    """`compose_dir` defaults to odoo.compose_dir on the droplet."""
    cfg = load_config(stack_file, stack=stack)
    files = collect_config_files(cfg, compose_dir)
    out = commit_config_files(cfg, files)
    publish_markdown("config-backup", "\n".join(["# Config backup", "", f"- committed: {out['committed']}",
                                                 f"- changed: {', '.join(out['changed']) or 'nothing'}",
                                                 f"- files: {', '.join(out['files'])}"]),
                     f"config backup of {cfg.name}")
    return out
