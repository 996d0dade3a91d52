"""n8n workflows as reviewable files (pure): one file per workflow, keys sorted, volatile fields dropped,
credentials only as stubs (id, name, type), as n8n's own source-control feature writes them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from odoo_stack_ops.errors import OpsError

# Fields that change on every save, execution or instance without a real change (or hold runtime data).
VOLATILE = {"createdAt", "updatedAt", "versionId", "versionCounter", "activeVersionId", "activeVersion",
            "triggerCount", "shared", "meta", "staticData", "pinData", "homeProject", "usedCredentials",
            "scopes", "parentFolder"}
KEPT = ("id", "name", "active", "isArchived", "description", "nodes", "connections", "settings", "tags")


def slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:60] or "workflow"


def filename(wf: dict[str, Any]) -> str:
    """Stable name: the id never changes; the slug keeps the file readable."""
    wid = str(wf.get("id") or "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", wid):
        raise OpsError(f"workflow {wf.get('name')!r} has no usable id ({wid!r})")
    return f"workflows/{wid}-{slug(str(wf.get('name', '')))}.json"


def credential_stubs(wf: dict[str, Any]) -> list[dict[str, str]]:
    """(id, name, type) of every credential the workflow's nodes reference; never their data."""
    stubs = {}
    for node in wf.get("nodes") or []:
        for ctype, ref in (node.get("credentials") or {}).items():
            if isinstance(ref, dict):
                stubs[(str(ref.get("id")), ctype)] = {"id": str(ref.get("id")), "name": str(ref.get("name")), "type": ctype}
    return [stubs[k] for k in sorted(stubs)]


def normalize(wf: Any) -> dict[str, Any]:
    """The workflow with only meaningful fields, tags as sorted names, node credentials reduced to stubs."""
    if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), list) or not isinstance(wf.get("connections"), dict):
        name = wf.get("name") if isinstance(wf, dict) else None
        raise OpsError(f"malformed workflow {name!r}: expected an object with 'nodes' (list) and 'connections' (object)")
    out = {k: wf[k] for k in KEPT if wf.get(k) is not None and k not in VOLATILE}
    out["tags"] = sorted({(t.get("name") if isinstance(t, dict) else str(t)) for t in wf.get("tags") or []})
    nodes = []
    for node in wf["nodes"]:
        n = dict(node)
        if "credentials" in n:
            n["credentials"] = {ctype: {"id": str(ref.get("id")), "name": str(ref.get("name"))}
                                for ctype, ref in sorted(n["credentials"].items()) if isinstance(ref, dict)}
        nodes.append(n)
    out["nodes"] = nodes
    return out


def render(wf: dict[str, Any]) -> str:
    return json.dumps(normalize(wf), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass
class ExportSet:
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, workflows: list[dict[str, Any]]) -> ExportSet:
        """Every workflow file plus credentials.json (stubs); all validated before anything is written."""
        files: dict[str, str] = {}
        stubs: dict[tuple[str, str], dict[str, str]] = {}
        for wf in workflows:
            text = render(wf)  # validates the shape first
            files[filename(wf)] = text
            for s in credential_stubs(wf):
                stubs[(s["id"], s["type"])] = s
        files["credentials.json"] = json.dumps([stubs[k] for k in sorted(stubs)], indent=2, sort_keys=True) + "\n"
        return cls(files)


def summarize(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """added / changed / removed workflow files between two sets (pure)."""
    o = {k for k in old if k.startswith("workflows/")}
    n = {k for k in new if k.startswith("workflows/")}
    return {"added": sorted(n - o), "changed": sorted(k for k in n & o if old[k] != new[k]), "removed": sorted(o - n)}


def commit_message(summary: dict[str, list[str]], when: str) -> str:
    lines = [f"n8n workflows {when}: {len(summary['added'])} added, {len(summary['changed'])} changed, "
             f"{len(summary['removed'])} removed", ""]
    for kind in ("added", "changed", "removed"):
        lines += [f"{kind}: {p.removeprefix('workflows/').removesuffix('.json')}" for p in summary[kind]]
    return "\n".join(lines).strip() + "\n"
