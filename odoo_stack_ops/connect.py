"""From a StackConfig to live executors: the droplet (SSH, or this machine), the Docker API, a container."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.local import LocalExecutor

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class Connections:
    """Opens each connection once, on first use, and closes them all at the end (`with Connections(cfg) as c`)."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self._host: Executor | None = None
        self._docker: Any = None
        self._containers: dict[str, Executor] = {}

    def host(self) -> Executor:
        """The droplet: SSH when configured, else this machine."""
        if self._host is None:
            if self.cfg.ssh is not None:
                from odoo_stack_ops.executors.ssh import SSHExecutor  # noqa: PLC0415 - paramiko only when needed

                self._host = SSHExecutor(self.cfg.ssh)
            else:
                self._host = LocalExecutor()
        return self._host

    def docker(self) -> docker.DockerClient:
        """The droplet's Docker Engine API (through the SSH connection in `ssh` mode)."""
        if self._docker is None:
            from odoo_stack_ops.executors.docker import docker_client  # noqa: PLC0415

            ssh = self.host() if self.cfg.docker.mode == "ssh" else None
            self._docker = docker_client(self.cfg.docker, ssh)  # type: ignore[arg-type]
        return self._docker

    def container(self, service: str) -> Executor:
        """An executor running commands inside the container of compose service `service`."""
        if service not in self._containers:
            from odoo_stack_ops.executors.docker import DockerExecutor, find_container  # noqa: PLC0415

            found = find_container(self.docker(), service, self.cfg.docker.compose_project)
            self._containers[service] = DockerExecutor(self.docker(), found)
        return self._containers[service]

    def forget(self, service: str) -> None:
        """Find the service's container again on next use (it was stopped, replaced or recreated)."""
        ex = self._containers.pop(service, None)
        if ex is not None:
            ex.close()

    def close(self) -> None:
        for ex in self._containers.values():
            ex.close()
        if self._docker is not None:
            self._docker.close()
        if self._host is not None:
            self._host.close()
        self._containers.clear()
        self._docker = self._host = None

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
