"""A real container registry on loopback (Debian's `docker-registry`: distribution's Registry HTTP API v2) and
stand-in image builds to push to it, for the stack-update tests and bench.

Builds are the sandbox image plus a few files (`podman build` of a Containerfile with COPY only, ~1 s), pushed
with `podman push`; podman's API pulls them because PodmanService marks loopback registries insecure.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import free_port, stop_group
from odoo_stack_ops.sandbox.podman import PodmanService

BINARY = "/usr/bin/docker-registry"

# An entry point that fails its health gate at once: it exits, as a broken image's server would
BROKEN_ENTRY = '#!/bin/sh\necho "standin: configuration error in the new build, exiting" >&2\nexit 3\n'


def slow_entry(delay_s: float) -> str:
    """The sandbox entry point with `delay_s` of start-up first (a service that takes time to come up)."""
    shebang, _, rest = (Path(__file__).parent / "entry.sh").read_text().partition("\n")
    return f"{shebang}\nsleep {delay_s:g}\n{rest}"


class Registry:
    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="registry-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Registry:
        if not Path(BINARY).exists():
            raise OpsError("docker-registry missing: apt-get install docker-registry")
        self.port = free_port()
        conf = self.base / "config.yml"
        conf.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                        f"{self.base / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n")
        log = (self.base / "registry.log").open("ab")
        self.proc = subprocess.Popen([BINARY, "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpsError(f"docker-registry exited: {(self.base / 'registry.log').read_text()[-500:]}")
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise OpsError("docker-registry did not answer /v2/ in time")

    def stop(self) -> None:
        stop_group(self.proc, wait_s=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def digest(self, repo: str, tag: str) -> str:
        """The manifest digest the registry serves for repo:tag."""
        from odoo_stack_ops.stack.registry import manifest_digest  # noqa: PLC0415

        return manifest_digest(f"{self.host}/{repo}:{tag}")

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build(podman: PodmanService, base_image: str, ref: str, files: dict[str, str]) -> str:
    """Build `ref` as `base_image` plus `files` (absolute path in the image -> text, executable); returns its id."""
    work = Path(tempfile.mkdtemp(prefix="build-", dir=podman.base / "tmp"))
    try:
        lines = [f"FROM {base_image}"]
        for i, (path, text) in enumerate(files.items()):
            (work / f"f{i}").write_text(text)
            (work / f"f{i}").chmod(0o755)
            lines.append(f"COPY f{i} {path}")
        (work / "Containerfile").write_text("\n".join(lines) + "\n")
        podman.podman("build", "-q", "-t", ref, str(work))
        image_id = podman.podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()
        return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"  # as the Engine API says it
    finally:
        shutil.rmtree(work, ignore_errors=True)


def push(podman: PodmanService, image: str, ref: str) -> None:
    """Push local `image` as `ref` in the registry; the local name `ref` is left as it was (only a pull moves it,
    as on a droplet where images are built elsewhere)."""
    podman.podman("push", "-q", "--tls-verify=false", image, f"docker://{ref}")
