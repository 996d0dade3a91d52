"""SSH executor (paramiko): commands on the droplet, strict host-key checking, the Docker socket tunnelled.

Secrets never appear in the remote command line: environment values are written on the channel's stdin and
read by a tiny POSIX sh prologue (`read` consumes a pipe byte by byte, so the caller's stdin follows intact).
The remote Docker socket is reached through OpenSSH's `direct-streamlocal@openssh.com` channel, which paramiko
does not build itself: `_StreamLocalTransport` appends the socket path to the CHANNEL_OPEN message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN
from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_file import SFTPFile

from odoo_stack_ops.command import Command
from odoo_stack_ops.config import SSHConfig
from odoo_stack_ops.errors import AccessDenied, CommandTimeout, ConnectError, HostKeyError, OpsError
from odoo_stack_ops.executors.base import CHUNK, Executor, Feeder, Result, StderrTail, Stdin, Stream, iter_stdin

log = logging.getLogger(__name__)
STREAMLOCAL = "direct-streamlocal@openssh.com"
DRAIN_LIMIT = 4 * CHUNK  # output left unread when a stream is closed early: read this much, then hang up


def private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """A private key from its text (ssh.private_key, e.g. a Prefect Secret block): Ed25519, ECDSA or RSA.

    Raises ConnectError without the key's text when none of them reads it."""
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        with contextlib.suppress(paramiko.SSHException, ValueError):
            return kind.from_private_key(io.StringIO(text), password=passphrase)
    raise ConnectError("ssh.private_key is not an Ed25519, ECDSA or RSA private key (or its passphrase is wrong)")


class _StreamLocalTransport(paramiko.Transport):
    """A Transport whose CHANNEL_OPEN for direct-streamlocal carries the socket path (RFC-less OpenSSH ext.)."""

    _path = threading.local()

    def open_unix_channel(self, path: str, timeout: float | None = None) -> paramiko.Channel:
        self._path.value = path
        try:
            return self.open_channel(STREAMLOCAL, timeout=timeout)
        finally:
            self._path.value = None

    def _send_user_message(self, data: Any) -> None:
        path = getattr(self._path, "value", None)
        if path and isinstance(data, paramiko.Message):
            raw = data.asbytes()
            kind = STREAMLOCAL.encode()
            if raw[:1] == cMSG_CHANNEL_OPEN and raw[5:5 + len(kind)] == kind:
                data.add_string(path)
                data.add_string("")
                data.add_int(0)
        super()._send_user_message(data)


def remote_command(command: Command, timeout: float | None) -> tuple[str, bytes]:
    """(command line for the remote shell, bytes to send first on stdin) — pure, tested directly."""
    env = command.plain_env()
    prologue = "".join(f"IFS= read -r {name} && export {name} && " for name in env)
    if command.cwd:
        prologue += f"cd -- {shlex.quote(command.cwd)} && "
    argv = list(command.argv)
    if timeout:
        argv = ["timeout", "-k", "2", f"{timeout:g}", *argv]
    line = shlex.join(["sh", "-c", prologue + 'exec "$@"', "sh", *argv]) if prologue else shlex.join(argv)
    preamble = "".join(f"{value}\n" for value in env.values()).encode()
    return line, preamble


def _with_preamble(preamble: bytes | None, stdin: Stdin) -> Iterator[bytes]:
    if preamble:
        yield preamble
    yield from iter_stdin(stdin)


class SSHExecutor(Executor):
    """Runs commands on the droplet over one SSH connection (opened on first use, shared by channels)."""

    def __init__(self, cfg: SSHConfig) -> None:
        self.cfg = cfg
        self.where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._bridges: list[_SocketBridge] = []

    # -- connection ---------------------------------------------------------------------------------------
    def client(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and self._client.get_transport() and self._client.get_transport().is_active():
                return self._client
            self._client = self._connect()
            return self._client

    def _connect(self) -> paramiko.SSHClient:
        cfg = self.cfg
        client = paramiko.SSHClient()
        known = Path(cfg.known_hosts).expanduser()
        if known.exists():
            # not load_host_keys: paramiko would then write keys accepted with checking off back into the
            # file, and a key taken on trust must not become trusted for the next strict connection
            client.get_host_keys().load(str(known))
        if cfg.strict_host_key_checking:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            log.warning("SSH host key checking is OFF for %s: the connection could be intercepted. Turn "
                        "ssh.strict_host_key_checking back on once the host key is in %s", self.where, known)
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - explicit, loudly logged opt-out
        key_hint = f"ssh-keyscan -p {cfg.port} {cfg.host} >> {known}"
        passphrase = cfg.key_passphrase.get_secret_value() if cfg.key_passphrase else None
        pkey = private_key(cfg.private_key.get_secret_value(), passphrase) if cfg.private_key else None
        own_key = cfg.key_file is not None or pkey is not None
        try:
            client.connect(
                cfg.host, port=cfg.port, username=cfg.user, pkey=pkey,
                key_filename=str(Path(cfg.key_file).expanduser()) if cfg.key_file else None,
                passphrase=passphrase,
                timeout=cfg.connect_timeout_s, banner_timeout=cfg.connect_timeout_s,
                auth_timeout=cfg.connect_timeout_s, allow_agent=not own_key,
                look_for_keys=not own_key, transport_factory=_StreamLocalTransport,
            )
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"the host key of {cfg.host}:{cfg.port} CHANGED: got {exc.key.get_name()} "
                f"{exc.key.fingerprint}, known_hosts has {exc.expected_key.fingerprint}. This is either a rebuilt "
                f"droplet or someone in the middle. Verify the new key out of band (DigitalOcean console), then "
                f"`ssh-keygen -R '[{cfg.host}]:{cfg.port}' -f {known}` and `{key_hint}`"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise AccessDenied(f"SSH authentication as {cfg.user}@{cfg.host}:{cfg.port} failed ({exc}); not retried: "
                               f"check ssh.user and ssh.key_file (SSH_KEY_FILE), and that its public key is in the "
                               f"droplet's ~{cfg.user}/.ssh/authorized_keys") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"{cfg.host}:{cfg.port} is not in {known}; strict host-key checking refuses unknown hosts. Add "
                    f"its key after verifying the fingerprint out of band: `{key_hint}`") from None
            raise ConnectError(f"SSH to {self.where} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot reach {self.where}: {exc}; check ssh.host/ssh.port and the firewall") from exc
        transport = client.get_transport()
        assert transport is not None  # noqa: S101 - connect succeeded
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        if cfg.keepalive_s:
            transport.set_keepalive(cfg.keepalive_s)
        return client

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def transport(self) -> _StreamLocalTransport:
        return self.client().get_transport()  # type: ignore[return-value]

    # -- commands -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stream(self, command: Command, *, timeout: float | None, check: bool, stdin: Stdin) -> Iterator[Stream]:
        start = time.monotonic()
        line, preamble = remote_command(command, timeout)
        try:
            chan = self.transport().open_session(timeout=self.cfg.connect_timeout_s)
            chan.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"SSH channel to {self.where} failed: {exc}") from exc
        tail = StderrTail()
        fired = threading.Event()

        def drain() -> None:
            while data := chan.recv_stderr(CHUNK):
                tail.add(data)

        def kill() -> None:
            fired.set()
            chan.close()

        feeder = Feeder(_with_preamble(preamble, stdin), chan.sendall, chan.shutdown_write)
        threads = [feeder, threading.Thread(target=drain, daemon=True)]
        for t in threads:
            t.start()
        timer = threading.Timer(timeout + 5, kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        stream = _ChannelStream(chan)
        try:
            yield stream
            _finish_reading(chan)
        except BaseException as exc:
            chan.close()
            if not self._alive() and not isinstance(exc, ConnectError):
                raise ConnectError(f"SSH connection to {self.where} dropped while running {command.masked()}; "
                                   f"transient, retried") from exc
            raise
        finally:
            got = chan.status_event.wait(None if timeout is None else timeout + 10)
            code = chan.exit_status if got else -1
            if timer:
                timer.cancel()
            for t in threads:
                t.join(5)
            chan.close()
            stream.result = Result(command, code, b"", tail.value(), time.monotonic() - start, self.where)
        if code == -1 and not fired.is_set() and not self._alive():
            raise ConnectError(f"SSH connection to {self.where} dropped while running {command.masked()}; "
                               f"transient, retried")
        feeder.raise_error()
        # coreutils `timeout` exits 124, or dies with its group on -k's SIGKILL (paramiko reports no code: -1)
        timed_out = timeout and code in (124, 137, -1) and time.monotonic() - start >= timeout
        if fired.is_set() or timed_out:
            raise CommandTimeout(stream.result, f"the command ran past its {timeout:g} s timeout")
        if check:
            stream.result.check()

    # -- files --------------------------------------------------------------------------------------------
    def get(self, remote_path: str, local_path: str) -> None:
        with self.client().open_sftp() as sftp:
            sftp.get(remote_path, local_path)

    def put(self, local_path: str, remote_path: str, mode: int = 0o600) -> None:
        """Copy a file to the droplet over SFTP, created with `mode` (default: owner only) so a secret is never
        readable by others, not even between the write and a chmod."""
        with self.client().open_sftp() as sftp, _open_private(sftp, remote_path, mode) as remote, \
                open(local_path, "rb") as local:
            remote.chmod(mode)  # the file existed already: creation attributes do not apply
            remote.set_pipelined(True)
            shutil.copyfileobj(local, remote, CHUNK)

    # -- the Docker socket --------------------------------------------------------------------------------
    def docker_socket_url(self, remote_socket: str) -> str:
        """A local unix:// URL whose connections are tunnelled to `remote_socket` on the droplet."""
        bridge = _SocketBridge(self, remote_socket)
        self._bridges.append(bridge)
        return f"unix://{bridge.path}"

    def open_unix_channel(self, path: str) -> paramiko.Channel:
        try:
            return self.transport().open_unix_channel(path, timeout=self.cfg.connect_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"cannot open {path} on {self.where} through SSH ({exc}); check that the socket "
                               f"exists and sshd allows stream-local forwarding") from exc

    def close(self) -> None:
        for bridge in self._bridges:
            bridge.close()
        self._bridges.clear()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _finish_reading(chan: paramiko.Channel) -> None:
    """Read what the caller left unread so a short tail lets the command exit 0; past DRAIN_LIMIT hang up,
    as a closed local pipe would (the command then gets SIGPIPE: endless output cannot hang us)."""
    left = DRAIN_LIMIT
    while left > 0 and (data := chan.recv(CHUNK)):
        left -= len(data)
    if left <= 0:
        chan.close()


def _open_private(sftp: paramiko.SFTPClient, path: str, mode: int) -> SFTPFile:
    """SFTP open for writing that sends the permissions with the create request (sftp-server passes them to
    open(2)); paramiko's own open() sends none, so the file would be born with the server's umask."""
    attrs = SFTPAttributes()
    attrs.st_mode = mode
    kind, msg = sftp._request(CMD_OPEN, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC, attrs)
    if kind != CMD_HANDLE:
        raise OpsError(f"SFTP open of {path} got an unexpected answer ({kind})")
    return SFTPFile(sftp, msg.get_binary(), "wb")


class _ChannelStream(Stream):
    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def read(self, size: int = -1) -> bytes:
        try:
            if size is None or size < 0:
                chunks = []
                while data := self._chan.recv(CHUNK):
                    chunks.append(data)
                return b"".join(chunks)
            return self._chan.recv(size)
        except OSError:  # the channel was closed under us (timeout): the exit code tells the rest
            return b""


class _SocketBridge:
    """A local unix socket; each accepted connection gets its own SSH channel to the remote socket."""

    def __init__(self, ex: SSHExecutor, remote: str) -> None:
        self.ex, self.remote = ex, remote
        self.dir = tempfile.mkdtemp(prefix="ssh-docker-")
        self.path = os.path.join(self.dir, "docker.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        os.chmod(self.path, 0o600)
        self.server.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True, name="ssh-docker-bridge").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            chan = self.ex.open_unix_channel(self.remote)
        except ConnectError as exc:
            log.warning("%s", exc)
            conn.close()
            return

        def up() -> None:
            try:
                while data := conn.recv(CHUNK):
                    chan.sendall(data)
            except OSError:
                pass
            with contextlib.suppress(OSError, EOFError):
                chan.shutdown_write()

        t = threading.Thread(target=up, daemon=True)
        t.start()
        try:
            while data := chan.recv(CHUNK):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            t.join(timeout=30)
            with contextlib.suppress(OSError, EOFError):
                chan.close()
            conn.close()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self.dir)
