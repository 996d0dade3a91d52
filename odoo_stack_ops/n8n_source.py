"""Reading workflows out of n8n and loading them back: its public REST API (X-N8N-API-KEY, cursor pagination)
or its CLI (`n8n export:workflow --backup`) run by any Executor — inside the `n8n` container in production,
on the worker in tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from pydantic import SecretStr

from odoo_stack_ops.errors import CommandFailed, ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.streams import tar_files

# Settings the public API accepts on create/update (anything else is answered with 400).
API_SETTINGS = ("executionOrder", "saveManualExecutions", "callerPolicy", "callerIds", "errorWorkflow", "timezone",
                "saveExecutionProgress", "saveDataErrorExecution", "saveDataSuccessExecution", "executionTimeout",
                "timeSavedPerExecution", "availableInMCP")


class N8nApi:
    """The few public-API calls the export and import need; every failure becomes a clear OpsError/ConnectError."""

    def __init__(self, url: str, api_key: SecretStr, timeout: float = 30) -> None:
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        headers = {"X-N8N-API-KEY": self.api_key.get_secret_value(), "Accept": "application/json"}
        try:
            resp = requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise ConnectError(f"n8n is unreachable at {self.url} ({type(exc).__name__}); check n8n.url and that "
                               f"the n8n container runs") from exc
        if resp.status_code in ok:
            return resp
        if resp.status_code == 401:
            raise OpsError("n8n refused the API key (401): create one in n8n (Settings → n8n API) and set N8N_API_KEY")
        if resp.status_code >= 500:
            raise ConnectError(f"n8n answered {resp.status_code} to {method} {path}: retried as transient")
        raise OpsError(f"n8n answered {resp.status_code} to {method} {path}: {resp.text[:300]}")

    def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        try:
            return resp.json() if resp.content else None
        except ValueError as exc:
            raise OpsError(f"n8n returned malformed JSON for {method} {path}") from exc

    def paged(self, path: str, page_size: int = 100) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following nextCursor."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self.json("GET", path, params=params)
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise OpsError(f"n8n returned an unexpected page for {path}: expected {{data: [...], nextCursor}}")
            out += page["data"]
            cursor = page.get("nextCursor")
            if not cursor:
                return out


def fetch_cli(executor: Executor, argv_prefix: Sequence[str], env: Mapping[str, str | SecretStr] | None = None,
              timeout: float = 600) -> list[dict[str, Any]]:
    """`<argv_prefix> export:workflow --backup` into a temporary folder on the executor's side, read back as one
    tar stream (no per-file round trips), the folder removed afterwards. An instance without workflows gives []."""
    tmp = executor.run(["mktemp", "-d"], timeout=30).stdout_text.strip()
    if not tmp.startswith("/"):
        raise OpsError(f"mktemp -d gave no usable directory on {executor.where}")
    try:
        result = executor.run([*argv_prefix, "export:workflow", "--backup", f"--output={tmp}/"], env=env,
                              timeout=timeout, check=False)
        if not result.ok:
            if "no workflows found" in (result.stdout_text + result.stderr_text).lower():
                return []
            raise CommandFailed(result, "check that the n8n CLI runs there (n8n.source 'cli' runs it in the n8n "
                                        "container) and can read its database")
        return _read_json_tar(executor, tmp, timeout)
    finally:
        executor.run(["rm", "-rf", "--", tmp], check=False, timeout=60)


def _read_json_tar(executor: Executor, folder: str, timeout: float) -> list[dict[str, Any]]:
    out = []
    with executor.stream(["tar", "-cf", "-", "-C", folder, "."], timeout=timeout) as stream:
        for member, fh in tar_files(stream):
            if not member.name.endswith(".json"):
                continue
            try:
                out.append(json.loads(fh.read()))
            except ValueError as exc:
                raise OpsError(f"malformed workflow JSON in {member.name} from the n8n CLI: {exc}") from exc
    return out


def api_body(wf: dict[str, Any]) -> dict[str, Any]:
    """The create/update body the public API accepts, from a normalised workflow file (pure)."""
    settings = {k: v for k, v in (wf.get("settings") or {}).items() if k in API_SETTINGS}
    return {"name": wf["name"], "nodes": wf["nodes"], "connections": wf["connections"], "settings": settings}


class Importer:
    """Loads normalised workflows into n8n: update by id when it exists (the id is kept), else create (n8n gives
    a new id); tags by name (created when missing); the active flag restored when asked."""

    def __init__(self, api: N8nApi) -> None:
        self.api = api
        self._tags: dict[str, str] | None = None

    def tag_ids(self, names: list[str]) -> list[dict[str, str]]:
        if self._tags is None:
            self._tags = {t["name"]: t["id"] for t in self.api.paged("/tags")}
        for name in names:
            if name not in self._tags:
                self._tags[name] = self.api.json("POST", "/tags", ok=(200, 201), json={"name": name})["id"]
        return [{"id": self._tags[n]} for n in names]

    def load(self, wf: dict[str, Any], restore_active: bool = True) -> dict[str, str]:
        """{'name', 'id', 'action': created|updated, 'active'} for one workflow."""
        exists = self.api.request("GET", f"/workflows/{wf['id']}", ok=(200, 404)).status_code == 200
        if exists:
            made = self.api.json("PUT", f"/workflows/{wf['id']}", json=api_body(wf))
        else:
            made = self.api.json("POST", "/workflows", ok=(200, 201), json=api_body(wf))
        wid = made["id"]
        self.api.json("PUT", f"/workflows/{wid}/tags", json=self.tag_ids(wf.get("tags") or []))
        active = bool(made.get("active"))
        if restore_active and bool(wf.get("active")) != active:
            self.api.json("POST", f"/workflows/{wid}/{'activate' if wf.get('active') else 'deactivate'}")
            active = bool(wf.get("active"))
        return {"name": wf["name"], "id": wid, "action": "updated" if exists else "created",
                "active": str(active).lower()}
