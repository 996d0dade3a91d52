"""An S3 endpoint standing for DigitalOcean Spaces: moto's server as a separate process on 127.0.0.1.

It checks credentials as Spaces does: once started, every request must carry a valid SigV4 signature made with
the one access key it issued (moto's IAM authentication, switched on after the key is created), so a wrong
SPACES_SECRET_ACCESS_KEY fails here as it would in production."""

from __future__ import annotations

import json
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
        self.access_key = SecretStr("")
        self.secret_key = SecretStr("")
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
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise OpsError("moto_server did not start")
        self._enforce_authentication()
        return self

    def _enforce_authentication(self) -> None:
        """Issue the sandbox's one access key (an IAM user allowed every S3 action), then make moto check every
        later request's signature against it (`/moto-api/reset-auth` 0: no more unauthenticated actions)."""
        import boto3  # noqa: PLC0415

        anyone = "bootstrap"  # moto takes any key until authentication is switched on below
        iam = boto3.session.Session().client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                                             aws_access_key_id=anyone, aws_secret_access_key=anyone)
        iam.create_user(UserName="spaces")
        iam.put_user_policy(UserName="spaces", PolicyName="spaces-full-access", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="spaces")["AccessKey"]
        self.access_key = SecretStr(key["AccessKeyId"])
        self.secret_key = SecretStr(key["SecretAccessKey"])
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data="0", timeout=10).raise_for_status()

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
