"""Reading workflows out of n8n: its public REST API (cursor pagination) or its CLI inside the container."""

from __future__ import annotations

import json
import tarfile
from typing import Any

import requests

from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor


def fetch_api(url: str, api_key: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every workflow through GET /api/v1/workflows, following nextCursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        try:
            resp = requests.get(f"{url.rstrip('/')}/api/v1/workflows", params=params, timeout=timeout,
                                headers={"X-N8N-API-KEY": api_key, "Accept": "application/json"})
        except requests.RequestException as exc:
            raise ConnectError(f"n8n is unreachable at {url} ({type(exc).__name__}); check n8n.url and that the "
                               f"n8n container runs") from exc
        if resp.status_code == 401:
            raise OpsError("n8n refused the API key (401): create one in n8n (Settings → n8n API) and set N8N_API_KEY")
        if resp.status_code >= 500:
            raise ConnectError(f"n8n answered {resp.status_code}: transient, retried")
        if resp.status_code != 200:
            raise OpsError(f"n8n answered {resp.status_code}: {resp.text[:200]}")
        try:
            page = resp.json()
        except ValueError as exc:
            raise OpsError("n8n returned malformed JSON for /api/v1/workflows") from exc
        out += page.get("data", [])
        cursor = page.get("nextCursor")
        if not cursor:
            return out


def fetch_cli(executor: Executor, command: list[str]) -> list[dict[str, Any]]:
    """`n8n export:workflow --backup` into a temporary folder on the executor's side, read back as a tar stream."""
    tmp = executor.run(["mktemp", "-d"], timeout=30).stdout_text.strip()
    try:
        executor.run([*command, "export:workflow", "--backup", f"--output={tmp}/"], timeout=600,
                     hint="check that the n8n CLI runs in the n8n container")
        out = []
        with executor.stream(["tar", "-cf", "-", "-C", tmp, "."], timeout=600) as stream, \
                tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".json")):
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    out.append(json.loads(data))
                except ValueError as exc:
                    raise OpsError(f"malformed workflow JSON in {member.name} from the n8n CLI: {exc}") from exc
            for _ in stream:
                pass
        return out
    finally:
        executor.run(["rm", "-rf", tmp], check=False, timeout=60)


def import_api(url: str, api_key: str, workflow: dict[str, Any], timeout: float = 30) -> str:
    """Create or update one workflow from its exported file; returns 'created' or 'updated'."""
    headers = {"X-N8N-API-KEY": api_key}
    body = {k: workflow[k] for k in ("name", "nodes", "connections") if k in workflow}
    body["settings"] = {k: v for k, v in (workflow.get("settings") or {}).items()
                        if k in ("executionOrder", "saveManualExecutions", "callerPolicy", "errorWorkflow",
                                 "timezone", "saveExecutionProgress", "saveDataErrorExecution",
                                 "saveDataSuccessExecution", "executionTimeout")}
    base = f"{url.rstrip('/')}/api/v1/workflows"
    try:
        exists = requests.get(f"{base}/{workflow['id']}", headers=headers, timeout=timeout).status_code == 200
        resp = (requests.put(f"{base}/{workflow['id']}", json=body, headers=headers, timeout=timeout) if exists
                else requests.post(base, json=body, headers=headers, timeout=timeout))
    except requests.RequestException as exc:
        raise ConnectError(f"n8n is unreachable at {url}: {type(exc).__name__}") from exc
    if resp.status_code >= 300:
        raise OpsError(f"n8n refused workflow {workflow.get('name')!r}: {resp.status_code} {resp.text[:200]}")
    return "updated" if exists else "created"
