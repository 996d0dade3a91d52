"""Flows `n8n-export` (deployment `weekly`) and `n8n-import` (on demand): the seed's Backup Strategy row
"n8n workflows — weekly — 12 weeks — Git", and the way back.

Export: read every workflow (public API or the CLI in the n8n container) → normalise and validate all of them
→ commit only on change → this week's tag → prune tags older than 12 weeks → push (atomically).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from odoo_stack_ops.config import load_config
from tasks.common import publish_markdown
from tasks.n8n import Source, commit_workflows, load_workflows, normalise, read_tagged, read_workflows


def export_report(out: dict[str, Any]) -> str:
    s = out["summary"]
    lines = ["# n8n export", "", f"- workflows: {out['workflows']}",
             f"- commit: {'`' + out['commit'][:12] + '`' if out['committed'] else 'none (no change)'}",
             f"- tag: `{out['tag']}`", f"- pruned tags: {', '.join(out['pruned']) or 'none'}", "",
             "| change | workflow |", "|---|---|"]
    lines += [f"| {kind} | {name} |" for kind in ("added", "changed", "removed") for name in s[kind]]
    return "\n".join(lines)


@flow(name="n8n-export", description="n8n workflows to git weekly: one normalised file each, commit only on change, "
                                     "weekly tag, tags older than 12 weeks pruned")
def n8n_export(stack_file: str | None = None, source: Source | None = None, keep_weeks: int = 12,
               allow_empty: bool = False, stack: str | None = None) -> dict[str, Any]:
    """`source` defaults to n8n.source. The CLI's command and where it runs come from the stack file
    (n8n.cli_argv, n8n.cli_where), never from a parameter: a run must not be able to choose a command."""
    cfg = load_config(stack_file, stack=stack)
    workflows = read_workflows(cfg, source or cfg.n8n.source)
    files = normalise(workflows)
    out = commit_workflows(cfg, files, keep_weeks, allow_empty)
    publish_markdown("n8n-export", export_report(out), f"n8n export of {cfg.name}")
    return out


@flow(name="n8n-import", description="Load the workflows of a weekly tag back into n8n (update by id, else create)")
def n8n_import(tag: str = "latest", stack_file: str | None = None, restore_active: bool = True,
               stack: str | None = None) -> dict[str, Any]:
    """`tag` is a weekly tag (n8n-YYYY-Www) or 'latest'; tags and the active flag are restored too."""
    cfg = load_config(stack_file, stack=stack)
    workflows = read_tagged(cfg, tag)
    loaded = load_workflows(cfg, workflows, restore_active)
    publish_markdown("n8n-import", "\n".join(["# n8n import", "", f"from `{tag}`", "",
                                              "| workflow | id | action | active |", "|---|---|---|---|",
                                              *[f"| {r['name']} | `{r['id']}` | {r['action']} | {r['active']} |"
                                                for r in loaded]]), f"n8n import of {tag}")
    return {"tag": tag, "loaded": loaded}
