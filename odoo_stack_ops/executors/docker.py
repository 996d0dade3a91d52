"""Docker Engine API: find a container by compose service, run commands in it (exec), move files.

Exec runs attached over the raw API socket: stdin is written while the multiplexed stdout/stderr frames
are read, so large outputs stream and stdin can be a stream too. Secrets go in the exec's environment,
not its argv. Works against Docker and podman's compatible API, locally, over TCP, or through SSH.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import docker
import docker.tls
from docker.errors import DockerException, NotFound

from odoo_stack_ops.command import Command
from odoo_stack_ops.config import DockerConfig
from odoo_stack_ops.errors import CommandTimeout, ConfigError, ConnectError, OpsError
from odoo_stack_ops.executors.base import CHUNK, Executor, Feeder, Result, StderrTail, Stdin, Stream

if TYPE_CHECKING:
    from odoo_stack_ops.executors.ssh import SSHExecutor

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"


def tls_config(cfg: DockerConfig) -> docker.tls.TLSConfig | None:
    """Mutual TLS for docker.mode 'tcp' (the daemon's certificate checked against tls_ca_cert, ours presented);
    None for the unix socket and ssh modes. Raises ConfigError when the material is missing or unreadable."""
    if cfg.mode != "tcp":
        return None
    if not (cfg.tls_ca_cert and cfg.tls_client_cert and cfg.tls_client_key):
        raise ConfigError("docker.mode 'tcp' needs docker.tls_ca_cert, docker.tls_client_cert and "
                          "docker.tls_client_key; plain TCP to the Engine API is refused")
    try:
        return docker.tls.TLSConfig(client_cert=(str(cfg.tls_client_cert), str(cfg.tls_client_key)),
                                    ca_cert=str(cfg.tls_ca_cert), verify=True)
    except docker.errors.TLSParameterError as exc:
        raise ConfigError(f"docker TLS material unusable: {exc}") from exc


def docker_client(cfg: DockerConfig, ssh: SSHExecutor | None = None) -> docker.DockerClient:
    """A client for the configured Engine API; `ssh` mode tunnels the droplet's socket through SSH."""
    if cfg.mode == "ssh":
        if ssh is None:
            raise OpsError("docker.mode is 'ssh' but no SSH connection is configured")
        ssh.client()  # connect first: a host-key or login problem must surface as itself
        url = ssh.docker_socket_url(cfg.remote_socket)
    else:
        url = cfg.base_url or "unix:///var/run/docker.sock"
    tls = tls_config(cfg)
    try:
        client = docker.DockerClient(base_url=url, timeout=300, tls=tls)
        client.ping()
    except DockerException as exc:
        raise ConnectError(f"Docker Engine API at {cfg.remote_socket if cfg.mode == 'ssh' else url} did not answer "
                           f"({type(exc).__name__}); check docker.mode/base_url and that the daemon runs") from exc
    return client


def find_container(client: docker.DockerClient, service: str, project: str | None = None) -> Any:
    """The one running container of compose service `service` (by label, else by name)."""
    labels = [f"{SERVICE_LABEL}={service}"] + ([f"{PROJECT_LABEL}={project}"] if project else [])
    found = client.containers.list(filters={"label": labels})
    if not found:
        with contextlib.suppress(NotFound):
            found = [client.containers.get(service)]
    if len(found) == 1:
        return found[0]
    existing = sorted(f"{c.name} ({c.labels.get(SERVICE_LABEL, '-')})" for c in client.containers.list(all=True))
    if not found:
        raise OpsError(f"no running container for service {service!r}"
                       f"{f' in project {project!r}' if project else ''}; containers: {existing or 'none'}. Start it "
                       f"with `docker compose up -d {service}`")
    raise OpsError(f"{len(found)} containers match service {service!r}: {[c.name for c in found]}; set "
                   f"docker.compose_project to choose one")


class DockerExecutor(Executor):
    """Runs commands inside one container through the Engine API's exec."""

    def __init__(self, client: docker.DockerClient, container: Any, user: str | None = None) -> None:
        self.client, self.container, self.user = client, container, user
        self.where = f"container {container.name}"

    @contextlib.contextmanager
    def _stream(self, command: Command, *, timeout: float | None, check: bool, stdin: Stdin) -> Iterator[Stream]:
        start = time.monotonic()
        argv = list(command.argv)
        if timeout:
            argv = ["timeout", "-s", "KILL", str(max(1, round(timeout))), *argv]
        api = self.client.api
        try:
            exec_id = api.exec_create(self.container.id, argv, stdin=True, stdout=True, stderr=True,
                                      environment=command.plain_env() or None, workdir=command.cwd,
                                      user=self.user or "")["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except NotFound as exc:
            raise OpsError(f"{self.where} is gone; was it recreated? ({exc})") from exc
        except DockerException as exc:
            raise ConnectError(f"exec in {self.where} failed: {exc}") from exc
        raw: socket.socket = getattr(sock, "_sock", sock)
        tail = StderrTail()
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)

        feeder = Feeder(stdin, raw.sendall, lambda: raw.shutdown(socket.SHUT_WR))
        feeder.start()
        timer = threading.Timer(timeout + 10, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        stream = _ExecStream(raw, tail)
        try:
            yield stream
            while stream.read(CHUNK):
                pass
        except BaseException as exc:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            if not isinstance(exc, ConnectError) and not self._reachable():
                raise ConnectError(f"Docker API connection lost while running {command.masked()} in {self.where}; "
                                   f"transient, retried") from exc
            raise
        finally:
            if timer:
                timer.cancel()
            feeder.join(5)
            with contextlib.suppress(OSError):
                sock.close()
            code = self._exit_code(exec_id)
            stream.result = Result(command, code, b"", tail.value(), time.monotonic() - start, self.where)
        feeder.raise_error()
        if fired.is_set() or (timeout and code == 137 and time.monotonic() - start >= timeout):
            raise CommandTimeout(stream.result, f"the command ran past its {timeout:g} s timeout")
        if check:
            stream.result.check()

    def _reachable(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def _exit_code(self, exec_id: str) -> int:
        for _ in range(100):  # the API may report the exec running for a moment after its output ended
            try:
                info = self.client.api.exec_inspect(exec_id)
            except Exception as exc:
                raise ConnectError(f"Docker API connection lost while waiting for {self.where}: {exc}") from exc
            if not info.get("Running"):
                return int(info.get("ExitCode") if info.get("ExitCode") is not None else -1)
            time.sleep(0.05)
        return -1

    def get(self, remote_path: str, local_path: str) -> None:
        import tarfile  # noqa: PLC0415

        from odoo_stack_ops.streams import IterReader  # noqa: PLC0415

        bits, _ = self.container.get_archive(remote_path, chunk_size=CHUNK)
        with tarfile.open(fileobj=IterReader(bits), mode="r|") as tar:
            for member in tar:
                src = tar.extractfile(member)
                if src is None:
                    raise OpsError(f"{remote_path} in {self.where} is not a regular file")
                with open(local_path, "wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                return
        raise OpsError(f"{remote_path} not found in {self.where}")

    def put(self, local_path: str, remote_path: str, mode: int = 0o600) -> None:
        import io  # noqa: PLC0415
        import os  # noqa: PLC0415
        import tarfile  # noqa: PLC0415

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tar.gettarinfo(local_path, arcname=os.path.basename(remote_path))
            info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "", ""
            with open(local_path, "rb") as fh:
                tar.addfile(info, fh)
        if not self.container.put_archive(os.path.dirname(remote_path) or "/", buf.getvalue()):
            raise OpsError(f"could not write {remote_path} in {self.where}")


class _ExecStream(Stream):
    """Demultiplexes Docker's attach stream: 8-byte headers (stream type, size), stdout returned, stderr kept."""

    def __init__(self, raw: socket.socket, tail: StderrTail) -> None:
        self._raw, self._tail = raw, tail
        self._pending = b""
        self._pos = 0  # small reads slice at an offset instead of copying the rest of a frame each time
        self._eof = False

    def _recv_exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            try:
                chunk = self._raw.recv(n - got)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _next_stdout(self) -> bytes:
        while not self._eof:
            header = self._recv_exact(8)
            if len(header) < 8:
                return b""
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = self._recv_exact(size)
            if kind == 2:
                self._tail.add(payload)
            elif payload:
                return payload
        return b""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._pending[self._pos:]]
            while chunk := self._next_stdout():
                parts.append(chunk)
            self._pending, self._pos = b"", 0
            return b"".join(parts)
        if self._pos >= len(self._pending):
            self._pending, self._pos = self._next_stdout(), 0
        out = self._pending[self._pos:self._pos + size]
        self._pos += len(out)
        return out
