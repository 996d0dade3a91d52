"""The digest a registry serves for an image tag, without pulling (what a dry run compares against).

Docker answers `GET /distribution/{ref}/json`; podman's compatible API does not, so the registry's HTTP API v2
is asked directly (`HEAD /v2/<name>/manifests/<tag>`, with the anonymous bearer-token challenge Docker Hub
uses). Plain HTTP only for a registry on a loopback address, the one Docker trusts without TLS by default.
"""

from __future__ import annotations

import re
from typing import Any

import requests
from docker.errors import DockerException

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.stack.plan import split_ref

MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")
CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def registry_digest(client: Any, ref: str, timeout: float = 20) -> str:
    """The registry's current digest of `ref`: through the Engine API, else from the registry itself."""
    try:
        return str(client.api.inspect_distribution(ref)["Descriptor"]["digest"])
    except DockerException as engine_error:
        try:
            return manifest_digest(ref, timeout)
        except (OpsError, requests.RequestException) as exc:
            raise OpsError(f"the digest of {ref} could not be read: Engine API {engine_error}; registry: {exc}") \
                from exc


def locate(ref: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag) of an image reference, Docker Hub's defaults filled in (pure)."""
    repo, tag = split_ref(ref)
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "registry-1.docker.io", repo.removeprefix("docker.io/")
    if host in ("docker.io", "index.docker.io"):
        host = "registry-1.docker.io"
    if host == "registry-1.docker.io" and "/" not in path:
        path = f"library/{path}"
    return host, path, tag.removeprefix("@")


def manifest_digest(ref: str, timeout: float = 20) -> str:
    host, path, tag = locate(ref)
    scheme = "http" if LOOPBACK.match(host) else "https"
    url = f"{scheme}://{host}/v2/{path}/manifests/{tag}"
    headers = {"Accept": MANIFEST_TYPES}
    resp = requests.head(url, headers=headers, timeout=timeout)
    if resp.status_code == 401 and "bearer" in resp.headers.get("WWW-Authenticate", "").lower():
        params = dict(CHALLENGE.findall(resp.headers["WWW-Authenticate"]))
        realm = params.pop("realm", "")
        if not realm.startswith("https://"):
            raise OpsError(f"registry {host} asks for a token from a non-HTTPS realm; refused")
        token = requests.get(realm, params=params, timeout=timeout).json()
        headers["Authorization"] = f"Bearer {token.get('token') or token.get('access_token')}"
        resp = requests.head(url, headers=headers, timeout=timeout)
    if resp.status_code != 200 or not resp.headers.get("Docker-Content-Digest"):
        raise OpsError(f"registry {host} answered HTTP {resp.status_code} for {path}:{tag}")
    return resp.headers["Docker-Content-Digest"]
