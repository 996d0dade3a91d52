"""An OpenSSH server on 127.0.0.1 with its own host key, standing for the droplet.

sshd needs /run/sshd; it runs in a private mount namespace with a tmpfs on /run so the host is untouched.
Root may log in with a generated key only; stream-local forwarding is on (the Docker socket travels that way).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from odoo_stack_ops.config import SSHConfig
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import free_port, stop_group

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, comment: str = "odoo-stack-ops-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


class SshServer:
    def __init__(self, base: Path | None = None, port: int | None = None, user: str = "root") -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="sshd-"))
        self.host, self.port, self.user = "127.0.0.1", port or free_port(), user
        self.key_file = self.base / "client_ed25519"
        self.host_key = self.base / "host_ed25519"
        self.known_hosts = self.base / "known_hosts"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> SshServer:
        if not Path(SSHD).exists():
            raise OpsError("OpenSSH server missing: apt-get install openssh-server")
        self.base.mkdir(parents=True, exist_ok=True)
        keygen(self.host_key, "sandbox-host")
        keygen(self.key_file)
        auth = self.base / "authorized_keys"
        auth.write_text((self.key_file.with_suffix(".pub")).read_text())
        pub = (self.host_key.with_suffix(".pub")).read_text().split()
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {pub[0]} {pub[1]}\n")
        config = self.base / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.host}", f"HostKey {self.host_key}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", f"AuthorizedKeysFile {auth}", "AllowStreamLocalForwarding yes",
            "AllowTcpForwarding yes", "PidFile none", "LogLevel ERROR", "MaxSessions 64", "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp", "ClientAliveInterval 30",
            # bash sources ~/.bashrc for every command sshd starts (SSH_CLIENT set, SHLVL < 2): on a machine whose
            # root .bashrc runs e.g. `pyenv init`, that cost 0.3-0.5 s per command; a droplet's stock .bashrc
            # returns at once for non-interactive shells. SHLVL=1 makes bash skip it, as there.
            "SetEnv SHLVL=1",
        ]) + "\n")
        script = ("mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && "
                  f'exec {SSHD} -D -e -f "$1"')
        log = (self.base / "sshd.log").open("ab")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                                      str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OpsError(f"sshd exited: {(self.base / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise OpsError("sshd did not answer in time")

    def ssh_config(self, **over: Any) -> SSHConfig:
        fields = {"host": self.host, "port": self.port, "user": self.user, "key_file": self.key_file,
                  "known_hosts": self.known_hosts}
        return SSHConfig(**{**fields, **over})

    def stop(self) -> None:
        stop_group(self.proc)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
