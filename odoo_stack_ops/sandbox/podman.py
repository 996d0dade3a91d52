"""podman's Docker-compatible Engine API on a private socket, with private storage, for the sandbox and tests.

crun fails on this kind of machine and podman's default ulimits cannot be applied in the sandbox, so it gets its
own containers.conf (runc, no default ulimits), as measured in TESTBED.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import stop_group

CONF = '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n'
# A registry on loopback speaks plain HTTP (Docker trusts 127.0.0.0/8 so by default; podman must be told).
# "127.0.0.1" also matches "127.0.0.1:PORT" in containers/image's prefix matching, so any test port works.
REGISTRIES = '[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n'


def force_remove(container: Any, attempts: int = 20) -> None:
    """Remove a container, even one its restart policy is restarting right now.

    podman answers 500 "container state improper" when the kill lands between an exit and the restart;
    the next try, a moment later, succeeds.
    """
    for attempt in range(attempts):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if attempt == attempts - 1 or "state improper" not in str(exc):
                raise
            time.sleep(0.1 * (attempt + 1))


class PodmanService:
    def __init__(self, base: Path | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="podman-"))
        self.socket_path = str(self.base / "podman.sock")
        self.base_url = f"unix://{self.socket_path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.base / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.base / "registries.conf"), "TMPDIR": str(self.base / "tmp")}

    def podman(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        """The podman CLI on the same private storage as the service."""
        argv = ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"), *args]
        return subprocess.run(argv, env=self.env(), capture_output=True, check=True, **kw)

    def start(self, timeout: float = 30) -> PodmanService:
        if not shutil.which("podman"):
            raise OpsError("podman missing: apt-get install podman runc")
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        (self.base / "containers.conf").write_text(CONF)
        (self.base / "registries.conf").write_text(REGISTRIES)
        log = (self.base / "service.log").open("ab")
        self.proc = subprocess.Popen(
            ["podman", "--root", str(self.base / "root"), "--runroot", str(self.base / "runroot"),
             "system", "service", "--time=0", self.base_url],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpsError(f"podman service exited: {(self.base / 'service.log').read_text()[-500:]}")
            try:
                c = self.client()
                c.ping()
                c.close()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise OpsError("podman service did not answer /_ping in time")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.base_url, timeout=120)

    def stop(self) -> None:
        try:
            c = self.client()
            for ctr in c.containers.list(all=True):
                force_remove(ctr)
            c.close()
        except Exception:  # noqa: BLE001, S110 - best effort before the service goes
            pass
        stop_group(self.proc, wait_s=15)
        # container processes and conmon may outlive the service; storage mounts must go before removal
        subprocess.run(["pkill", "-f", str(self.base)], check=False)
        for _ in range(10):
            mounts = [ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines()
                      if ln.split()[1].startswith(str(self.base))]
            if not mounts:
                break
            for m in sorted(mounts, reverse=True):
                subprocess.run(["umount", "-l", m], check=False, capture_output=True)
            time.sleep(0.3)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PodmanService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
