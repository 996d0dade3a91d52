"""An S3 endpoint standing for DigitalOcean Spaces: moto's server as a separate process on 127.0.0.1."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from pydantic import SecretStr

from odoo_stack_ops.config import SpacesConfig
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import free_port, stop_group


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.access_key = SecretStr("SANDBOX" + secrets.token_hex(6).upper())
        self.secret_key = SecretStr(secrets.token_urlsafe(24))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> S3Server:
        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            raise OpsError("moto_server missing: it comes with the dev dependency moto[server] (uv sync)")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(self.endpoint, timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise OpsError("moto_server did not start")

    def spaces_config(self, bucket: str, prefix: str = "odoo-erp-prod") -> SpacesConfig:
        return SpacesConfig(region="sgp1", endpoint=self.endpoint, bucket=bucket, prefix=prefix,
                            access_key_id=self.access_key, secret_access_key=self.secret_key)

    def client(self) -> Any:
        from odoo_stack_ops.backup.spaces import client  # noqa: PLC0415

        return client(self.spaces_config("unused"))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "sgp1"})
        return name

    def stop(self) -> None:
        stop_group(self.proc)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
