"""Flows `n8n-export` (weekly) and `n8n-import` (on demand): n8n workflows to git and back (Backup Strategy:
n8n workflows weekly, 12 weeks, Git). A week without real changes makes no commit; every change is a small diff."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task

from odoo_stack_ops import n8n_export as nx
from odoo_stack_ops import n8n_source
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.gitops import repo_for, tags_to_prune, today, week_tag
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger, publish_markdown


def _api_key(cfg: StackConfig) -> str:
    if cfg.n8n.api_key is None:
        raise OpsError("n8n.source is 'api' but N8N_API_KEY is not set")
    return cfg.n8n.api_key.get_secret_value()


@task(name="read-workflows", **TRANSIENT_RETRIES)
def read_workflows(cfg: StackConfig, source: str, cli_command: list[str], cli_where: str) -> list[dict[str, Any]]:
    if source == "api":
        return n8n_source.fetch_api(cfg.n8n.url, _api_key(cfg))
    if cli_where == "worker":
        return n8n_source.fetch_cli(LocalExecutor(), cli_command)
    with Connections(cfg) as conns:
        return n8n_source.fetch_cli(conns.container("n8n"), cli_command)


@task(name="commit-workflows", **NO_RETRIES)
def commit_workflows(cfg: StackConfig, workflows: list[dict[str, Any]], keep_weeks: int) -> dict[str, Any]:
    exports = nx.ExportSet.build(workflows)  # validates every workflow before the repository is touched
    repo = repo_for(cfg, cfg.git.n8n_remote, "n8n-repo")
    repo.sync()
    old = repo.read()
    summary = nx.summarize(old, exports.files)
    repo.replace({k: v for k, v in exports.files.items() if k.startswith("workflows/")}, "workflows/")
    repo.replace({"credentials.json": exports.files["credentials.json"]}, "credentials.json")
    day = today()
    committed = repo.commit_if_changed(nx.commit_message(summary, day.isoformat()))
    tag = week_tag(day)
    has_commit = bool(repo.git("rev-parse", "--verify", "-q", "HEAD", check=False).strip())
    if has_commit and (committed or tag not in repo.tags()):
        repo.tag(tag)
    prune = tags_to_prune(repo.tags(), day, keep_weeks)
    for t in prune:
        repo.git("tag", "-d", t)
    if has_commit:
        repo.push(tags=[tag] if tag in repo.tags() else [], delete_tags=prune)
    logger().info("n8n export: %s; commit %s; tag %s; pruned %s", summary, "made" if committed else "not needed",
                  tag, prune or "none")
    return {"summary": summary, "committed": committed, "tag": tag, "pruned": prune, "workflows": len(workflows)}


@flow(name="n8n-export", description="n8n workflows to git weekly (12 weeks of tags); commit only on change")
def n8n_export(stack_file: str | None = None, source: Literal["api", "cli"] | None = None,
               cli_command: list[str] | None = None, cli_where: Literal["container", "worker"] = "container",
               keep_weeks: int = 12) -> dict[str, Any]:
    cfg = load_config(stack_file)
    workflows = read_workflows(cfg, source or cfg.n8n.source, cli_command or ["n8n"], cli_where)
    out = commit_workflows(cfg, workflows, keep_weeks)
    s = out["summary"]
    publish_markdown("n8n-export", f"# n8n export\n\n- workflows: {out['workflows']}\n- added: {s['added']}\n"
                     f"- changed: {s['changed']}\n- removed: {s['removed']}\n- committed: {out['committed']}\n"
                     f"- tag: {out['tag']}\n- pruned tags: {out['pruned']}", f"n8n export of {cfg.name}")
    return out


@flow(name="n8n-import", description="Load the workflows of a weekly tag back into n8n")
def n8n_import(tag: str, stack_file: str | None = None) -> dict[str, Any]:
    import json  # noqa: PLC0415

    from odoo_stack_ops.upgrade.plan import check_ref  # noqa: PLC0415

    cfg = load_config(stack_file)
    check_ref(tag)
    repo = repo_for(cfg, cfg.git.n8n_remote, "n8n-repo")
    repo.sync()
    if tag not in repo.tags():
        raise OpsError(f"tag {tag} not found in {cfg.git.n8n_remote}; tags: {sorted(repo.tags())[-12:]}")
    paths = [p for p in repo.git("ls-tree", "-r", "--name-only", tag, "workflows/").split() if p.endswith(".json")]
    results = {}
    for p in paths:
        wf = json.loads(repo.git("show", f"{tag}:{p}"))
        results[wf.get("name", p)] = n8n_source.import_api(cfg.n8n.url, _api_key(cfg), wf)
    publish_markdown("n8n-import", "# n8n import\n\n" + "\n".join(f"- {k}: {v}" for k, v in results.items()),
                     f"n8n import of {tag}")
    return results
