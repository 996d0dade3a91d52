"""n8n tasks, one verb each: read the workflows, normalise them, commit/tag/push them, read a tag back, load it."""

from __future__ import annotations

from typing import Any, Literal

from prefect import task

from odoo_stack_ops import n8n_export as nx
from odoo_stack_ops import n8n_source
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import ConfigError, OpsError
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.gitops import WEEK_TAG, repo_for, tags_to_prune, today, week_tag
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger

REPO_DIR = "n8n-repo"
Source = Literal["api", "cli"]


def _api(cfg: StackConfig) -> n8n_source.N8nApi:
    if cfg.n8n.api_key is None:
        raise ConfigError("the n8n public API needs N8N_API_KEY (n8n.api_key): create a key in n8n → Settings → n8n API")
    return n8n_source.N8nApi(cfg.n8n.url, cfg.n8n.api_key)


@task(name="read-n8n-workflows", **TRANSIENT_RETRIES)
def read_workflows(cfg: StackConfig, source: Source) -> list[dict[str, Any]]:
    """Every workflow, through the public API or the CLI configured in the stack file (n8n.cli_argv, in the n8n
    container or on the worker as n8n.cli_where says)."""
    if source == "api":
        workflows = _api(cfg).paged("/workflows")
    elif cfg.n8n.cli_where == "worker":
        workflows = n8n_source.fetch_cli(LocalExecutor(), cfg.n8n.cli_argv)
    else:
        with Connections(cfg) as conns:
            workflows = n8n_source.fetch_cli(conns.container("n8n"), cfg.n8n.cli_argv)
    logger().info("read %d workflow(s) from n8n through its %s", len(workflows), source.upper())
    return workflows


@task(name="normalise-workflows", **NO_RETRIES)
def normalise(workflows: list[dict[str, Any]]) -> dict[str, str]:
    """The export's files, every workflow validated first: a malformed one fails the run before git is touched."""
    return nx.ExportSet.build(workflows).files


@task(name="commit-workflows", **TRANSIENT_RETRIES)
def commit_workflows(cfg: StackConfig, files: dict[str, str], keep_weeks: int = 12,
                     allow_empty: bool = False) -> dict[str, Any]:
    """Sync the clone, replace the workflow files, commit only on change, move this week's tag, prune tags
    older than `keep_weeks`, push all of it atomically. A rejected push resets the clone (nothing half-done);
    being idempotent, the task may be retried after a transient failure."""
    repo = repo_for(cfg, cfg.git.n8n_remote, REPO_DIR)
    day = today(cfg.backup.timezone)
    with repo.locked():
        repo.sync()
        old = repo.read(nx.WORKFLOWS_DIR)
        new = {k: v for k, v in files.items() if k.startswith(nx.WORKFLOWS_DIR)}
        if old and not new and not allow_empty:
            raise OpsError(f"n8n returned no workflows while git holds {len(old)}: refusing to record them all as "
                           "removed (wrong n8n database?); run with allow_empty=True if this is intended")
        summary = nx.summarize(old, new)
        repo.replace(new, nx.WORKFLOWS_DIR)
        repo.replace({nx.CREDENTIALS_FILE: files[nx.CREDENTIALS_FILE]}, nx.CREDENTIALS_FILE)
        committed = repo.commit_if_changed(nx.commit_message(summary, day.isoformat()))
        tag = week_tag(day)
        tags = repo.tags()
        if committed or tag not in tags:
            repo.tag(tag)
        prune = [t for t in tags_to_prune(repo.tags(), day, keep_weeks) if t != tag]
        for t in prune:
            repo.git("tag", "-d", t)
        repo.push(tags=[tag], delete_tags=prune)
        head = repo.git("rev-parse", "HEAD").strip()
    logger().info("n8n export: %d added, %d changed, %d removed; %s; tag %s; pruned %s", len(summary["added"]),
                  len(summary["changed"]), len(summary["removed"]), "committed" if committed else "no change",
                  tag, ", ".join(prune) or "none")
    return {"summary": summary, "committed": committed, "commit": head, "tag": tag, "pruned": prune,
            "workflows": len(new)}


@task(name="read-tagged-workflows", **TRANSIENT_RETRIES)
def read_tagged(cfg: StackConfig, tag: str) -> list[dict[str, Any]]:
    """The workflows stored under a weekly tag ('latest' = the newest one), each file validated."""
    repo = repo_for(cfg, cfg.git.n8n_remote, REPO_DIR)
    with repo.locked():
        repo.sync()
        tags = sorted(t for t in repo.tags() if WEEK_TAG.match(t))
        if tag == "latest" and tags:
            tag = tags[-1]
        if not WEEK_TAG.match(tag) or tag not in tags:
            raise OpsError(f"tag {tag!r} not found in the n8n repository; weekly tags kept: {', '.join(tags) or 'none'}")
        paths = [p for p in repo.git("ls-tree", "-r", "--name-only", tag, "--", nx.WORKFLOWS_DIR).splitlines()
                 if p.endswith(".json")]
        workflows = [nx.parse_file(p, repo.git("show", f"{tag}:{p}")) for p in paths]
    logger().info("tag %s holds %d workflow(s)", tag, len(workflows))
    return workflows


@task(name="load-workflows", **NO_RETRIES)
def load_workflows(cfg: StackConfig, workflows: list[dict[str, Any]], restore_active: bool = True) -> list[dict[str, str]]:
    """Each workflow into n8n (update by id, else create); every one is tried, failures reported together.
    Not retried: a create that half-succeeded must not be repeated blindly."""
    importer = n8n_source.Importer(_api(cfg))
    done, failed = [], []
    for wf in workflows:
        try:
            done.append(importer.load(wf, restore_active=restore_active))
        except OpsError as exc:
            failed.append(f"{wf['name']!r}: {exc}")
    if failed:
        raise OpsError(f"{len(failed)} of {len(workflows)} workflow(s) could not be loaded "
                       f"({len(done)} loaded): " + "; ".join(failed))
    return done
