"""n8n workflows as reviewable files (pure): one file per workflow, keys sorted, volatile fields dropped,
credentials only as stubs (id, name, type).

What is dropped and why (n8n 1.123's API and `export:workflow --backup` output; n8n's own source-control
feature, `source-control-export.service.ee.ts`, writes only id/name/nodes/connections/settings/… and blanks
credential data the same way):
- timestamps `createdAt`/`updatedAt`; `versionId`, `versionCounter`, `activeVersionId`, `activeVersion` (move on
  every save or activation without a change a reviewer can see); `triggerCount` (derived from activation);
- `staticData` (runtime state such as polling cursors, rewritten by executions); `pinData` (captured test data,
  may hold customer records); `meta` (instance id, UI flags); `shared`/`homeProject`/`scopes`/`parentFolder`
  (ownership and UI context of this instance, not of the workflow).
Kept: id, name, active, isArchived, description, nodes, connections, settings and tag names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from odoo_stack_ops.errors import OpsError

VOLATILE = frozenset({
    "createdAt", "updatedAt", "versionId", "versionCounter", "activeVersionId", "activeVersion", "triggerCount",
    "staticData", "pinData", "meta", "shared", "homeProject", "usedCredentials", "scopes", "parentFolder",
    "parentFolderId", "checksum",
})
KEPT = ("id", "name", "active", "isArchived", "description", "nodes", "connections", "settings", "tags")
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_]{1,64}\Z")
WORKFLOWS_DIR = "workflows/"
CREDENTIALS_FILE = "credentials.json"


def slug(name: str) -> str:
    """A readable, file-safe form of a workflow name (ASCII letters and digits, dashes)."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s[:60].rstrip("-") or "workflow"


def filename(wf: dict[str, Any]) -> str:
    """workflows/<id>-<slug>.json: the id never changes, so the file is stable; the slug keeps it readable."""
    wid = str(wf.get("id") or "")
    if not WORKFLOW_ID.match(wid):
        raise OpsError(f"workflow {wf.get('name')!r} has no usable id ({wid!r}): expected letters, digits and _")
    return f"{WORKFLOWS_DIR}{wid}-{slug(str(wf.get('name', '')))}.json"


def workflow_id(path: str) -> str:
    """The workflow id a file name of `filename()` carries."""
    return path.removeprefix(WORKFLOWS_DIR).split("-", 1)[0].removesuffix(".json")


def _check_shape(wf: Any) -> dict[str, Any]:
    name = wf.get("name") if isinstance(wf, dict) else None
    if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), list) or not isinstance(wf.get("connections"), dict):
        raise OpsError(f"malformed workflow {name!r}: expected an object with 'nodes' (list) and 'connections' (object)")
    if not isinstance(name, str) or not name.strip():
        raise OpsError(f"malformed workflow {wf.get('id')!r}: 'name' must be a non-empty string")
    for node in wf["nodes"]:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not isinstance(node.get("type"), str):
            raise OpsError(f"malformed workflow {name!r}: every node needs a 'name' and a 'type'")
    if wf.get("settings") is not None and not isinstance(wf["settings"], dict):
        raise OpsError(f"malformed workflow {name!r}: 'settings' must be an object")
    return wf


def _stub_node_credentials(node: dict[str, Any]) -> dict[str, Any]:
    """A node with each credential reference reduced to {id, name}: never anything else that came with it."""
    creds = node.get("credentials")
    if creds is None:
        return dict(node)
    if not isinstance(creds, dict):
        raise OpsError(f"malformed node {node.get('name')!r}: 'credentials' must be an object")
    stubs = {ctype: {"id": str(ref.get("id")), "name": str(ref.get("name"))}
             for ctype, ref in creds.items() if isinstance(ref, dict)}
    return {**node, "credentials": stubs}


def tag_names(tags: Any) -> list[str]:
    """Sorted tag names, from API tag objects or plain names."""
    return sorted({str(t.get("name")) if isinstance(t, dict) else str(t) for t in tags or []})


def normalize(wf: Any) -> dict[str, Any]:
    """The workflow with only meaningful fields: tags as sorted names, nodes sorted by name (n8n node names are
    unique per workflow), node credentials reduced to stubs. Raises OpsError for a malformed workflow."""
    wf = _check_shape(wf)
    out = {k: wf[k] for k in KEPT if wf.get(k) is not None}
    out["tags"] = tag_names(wf.get("tags"))
    out["nodes"] = sorted((_stub_node_credentials(n) for n in wf["nodes"]), key=lambda n: (n["name"], str(n.get("id"))))
    return out


def render(wf: dict[str, Any]) -> str:
    """The file text: normalised, keys sorted, two-space indent, UTF-8 kept readable, trailing newline."""
    return json.dumps(normalize(wf), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def credential_stubs(wf: dict[str, Any]) -> list[dict[str, str]]:
    """(id, name, type) of every credential the workflow's nodes reference; never their data."""
    stubs = {}
    for node in wf.get("nodes") or []:
        for ctype, ref in ((node.get("credentials") or {}) if isinstance(node, dict) else {}).items():
            if isinstance(ref, dict):
                stubs[(str(ref.get("id")), ctype)] = {"id": str(ref.get("id")), "name": str(ref.get("name")),
                                                      "type": ctype}
    return [stubs[k] for k in sorted(stubs)]


@dataclass(frozen=True)
class ExportSet:
    """Every file of one export ({path: text}); built and validated whole before the repository is touched."""

    files: dict[str, str]

    @classmethod
    def build(cls, workflows: list[Any]) -> ExportSet:
        """Workflow files plus credentials.json (stubs). Raises OpsError on any malformed or duplicate workflow."""
        if not isinstance(workflows, list):
            raise OpsError("malformed export: expected a list of workflows")
        files: dict[str, str] = {}
        seen: dict[str, str] = {}
        stubs: dict[tuple[str, str], dict[str, str]] = {}
        for wf in workflows:
            text = render(wf)  # validates the shape first
            path = filename(wf)
            wid = workflow_id(path)
            if wid in seen:
                raise OpsError(f"malformed export: workflow id {wid} appears twice ({seen[wid]!r}, {wf['name']!r})")
            seen[wid] = wf["name"]
            files[path] = text
            for s in credential_stubs(wf):
                stubs[(s["id"], s["type"])] = s
        files[CREDENTIALS_FILE] = json.dumps([stubs[k] for k in sorted(stubs)], indent=2, sort_keys=True) + "\n"
        return cls(files)

    def workflow_files(self) -> dict[str, str]:
        return {k: v for k, v in self.files.items() if k.startswith(WORKFLOWS_DIR)}


def summarize(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """added / changed / removed workflows between two file sets, matched by workflow id (a rename is a change,
    shown as 'old-name → new-name'); names are file stems without the folder."""
    def by_id(files: dict[str, str]) -> dict[str, str]:
        return {workflow_id(k): k for k in files if k.startswith(WORKFLOWS_DIR) and k.endswith(".json")}

    def stem(path: str) -> str:
        return path.removeprefix(WORKFLOWS_DIR).removesuffix(".json")

    o, n = by_id(old), by_id(new)
    changed = []
    for wid in sorted(o.keys() & n.keys()):
        if o[wid] != n[wid]:
            changed.append(f"{stem(o[wid])} → {stem(n[wid])}")
        elif old[o[wid]] != new[n[wid]]:
            changed.append(stem(n[wid]))
    return {"added": sorted(stem(n[w]) for w in n.keys() - o.keys()), "changed": changed,
            "removed": sorted(stem(o[w]) for w in o.keys() - n.keys())}


def commit_message(summary: dict[str, list[str]], when: str) -> str:
    """First line: counts; then one line per workflow (what `git log` readers need)."""
    lines = [f"n8n workflows {when}: {len(summary['added'])} added, {len(summary['changed'])} changed, "
             f"{len(summary['removed'])} removed", ""]
    for kind in ("added", "changed", "removed"):
        lines += [f"{kind}: {name}" for name in summary[kind]]
    return "\n".join(lines).strip() + "\n"


def parse_file(path: str, text: str) -> dict[str, Any]:
    """A workflow file read back from the repository (for n8n-import), validated like an export."""
    try:
        wf = json.loads(text)
    except ValueError as exc:
        raise OpsError(f"malformed workflow JSON in {path}: {exc}") from exc
    return normalize(wf)
