"""Prefect's API clients share one verified TLS context per CA file (odoo_stack_ops/prefect_tls.py, installed in
the warm-start zygote): against a real HTTPS API with a throwaway CA, clients verify and make no context of their
own; a renewed CA file makes a new one; a wrong CA still fails; insecure-skip-verify still gets its own contexts.
Each case runs in a fresh interpreter, as a forked run would, so the pytest process keeps Prefect untouched."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from odoo_stack_ops.prefect_local import PROJECT
from odoo_stack_ops.sandbox.tls import make_ca_and_cert
from tests.checks import http_endpoint

CLIENTS = r"""
import asyncio, json, os, ssl, sys
from odoo_stack_ops import prefect_tls
changed = prefect_tls.share_client_contexts()
made = []
real = ssl.create_default_context
def counting(*args, **kwargs):
    made.append(real(*args, **kwargs))
    return made[-1]
ssl.create_default_context = counting
from prefect.client.orchestration import get_client

async def three():
    for _ in range(3):
        async with get_client() as client:
            if error := await client.api_healthcheck():
                raise SystemExit(f"{type(error).__name__}: {error}")

asyncio.run(three())
with get_client(sync_client=True) as client:
    if error := client.api_healthcheck():
        raise SystemExit(f"{type(error).__name__}: {error}")
before_renewal = len(made)
if os.environ.get("RENEW_CA"):
    with open(os.environ["PREFECT_API_SSL_CERT_FILE"], "a") as fh:
        fh.write("\n")  # a renewed bundle: another size
    asyncio.run(three())
print(json.dumps({"changed": changed, "made": before_renewal, "after_renewal": len(made),
                  "modes": sorted({int(c.verify_mode) for c in made})}))
"""


@pytest.fixture(scope="module")
def https_api(tmp_path_factory):
    """A TLS endpoint answering Prefect's health and version checks, its certificate from a throwaway CA."""
    ca, cert, key = make_ca_and_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with http_endpoint(lambda _m, path, _b: (200, b"true" if path.endswith("/health") else b'"3.9.1"'),
                       context) as base:
        yield f"{base}/api", ca


def clients(api: str, **env: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([sys.executable, "-c", CLIENTS], cwd=PROJECT, capture_output=True, text=True, timeout=120,
                          env={**keep, "PREFECT_API_URL": api, "PREFECT_HOME": env.pop("home"), **env}, check=False)


def test_clients_share_the_verified_context_and_still_verify(https_api, tmp_path):
    api, ca = https_api
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(ca).read_bytes())
    proc = clients(api, home=str(tmp_path), PREFECT_API_SSL_CERT_FILE=str(bundle), RENEW_CA="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["changed"] == ["prefect.client.orchestration", "prefect._internal.version_checking",
                              "prefect._internal.websockets"]  # a Prefect release that moved them fails here
    assert out["made"] == 0  # four clients verified the server with the context made once, up front
    assert out["after_renewal"] == 1  # the renewed bundle: one new context, then shared again
    assert out["modes"] == [int(ssl.CERT_REQUIRED)]


def test_a_wrong_ca_still_fails_and_insecure_skip_verify_keeps_its_own_contexts(https_api, tmp_path):
    api, _ca = https_api
    wrong, _, _ = make_ca_and_cert(tmp_path / "other", ca_common_name="another CA")
    proc = clients(api, home=str(tmp_path), PREFECT_API_SSL_CERT_FILE=str(wrong))
    assert proc.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in proc.stderr + proc.stdout
    proc = clients(api, home=str(tmp_path), PREFECT_API_TLS_INSECURE_SKIP_VERIFY="true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["made"] == 4 and out["modes"] == [int(ssl.CERT_NONE)]  # made fresh each time, as Prefect does
