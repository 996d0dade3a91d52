"""PostgreSQL TLS policy shared by the database and the log sink: verify-full with the cluster's own CA.

`sslmode=require` encrypts but accepts any certificate, so anyone on the path can pose as the server; it
still works, with a warning once per flow run (once per process outside a run). A certificate the CA does
not vouch for, or a verifying mode without a CA file, is refused with what to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from odoo_stack_ops.command import Command
from odoo_stack_ops.errors import ConfigError
from odoo_stack_ops.executors.base import Executor, Stdin, Stream

log = logging.getLogger(__name__)

VERIFYING = ("verify-ca", "verify-full")
UNVERIFIED = ("disable", "allow", "prefer", "require")
DEFAULT_SSLMODE = "verify-full"

DO_CA_HOWTO = (
    "download the cluster's CA certificate (DigitalOcean control panel → Databases → {cluster} → Connection "
    "details → Download CA certificate, or `doctl databases get-ca <cluster-id>`, or the API's "
    "GET /v2/databases/<cluster-id>/ca), save it on the worker (e.g. ~/.postgresql/{cluster}-ca.crt) and point "
    "database.sslrootcert (DB_SSLROOTCERT) at that file"
)
SUPABASE_CA_HOWTO = (
    "download the project's CA certificate (Supabase dashboard → Project Settings → Database → SSL "
    "Configuration → Download certificate), save it on the worker and add `sslmode=verify-full&sslrootcert=<that "
    "file>` to SUPABASE_DB_URL (supabase.db_dsn)"
)

_warned: set[tuple[str | None, str]] = set()
_lock = threading.Lock()


class TLSVerificationError(ConfigError):
    """The server's certificate could not be verified (or no CA is configured): fixed by configuration, never
    retried."""


def ca_problem(sslmode: str, sslrootcert: str | Path | None) -> str | None:
    """Why a verifying sslmode cannot work with this CA file (pure apart from a stat), else None."""
    if sslmode not in VERIFYING:
        return None
    if not sslrootcert:
        return f"sslmode={sslmode} checks the server's certificate against a CA, but no CA file (sslrootcert) is set"
    path = Path(sslrootcert).expanduser()
    if not path.is_file():
        return f"sslmode={sslmode}: the CA file {path} (sslrootcert) does not exist on this worker"
    return None


def is_certificate_failure(message: str) -> bool:
    """libpq's wording for a certificate the CA does not vouch for, a name mismatch or a missing CA file."""
    text = message.lower()
    return any(s in text for s in ("certificate", "does not match host name", "sslrootcert", "signature failure",
                                   "local issuer"))


# libpq's and the server's wording (SQLSTATE 28000, 28P01, 42501: libpq gives no SQLSTATE for a failed
# connection) for credentials or rights that were refused: the same answer however often we ask.
AUTH_FAILURES = ("password authentication failed", "authentication failed for user", "no password supplied",
                 "no pg_hba.conf entry", "pg_hba.conf rejects connection", "is not permitted to log in")
ROLE_MISSING = re.compile(r'role ".*" does not exist')
DATABASE_MISSING = re.compile(r'database ".*" does not exist')  # a configuration error: no retry makes it appear
NO_CONNECT_RIGHT = ("permission denied for database", "must have connect privilege")


def refused(message: str) -> bool:
    """True when a connection error says the role, its password or its rights were refused (pure): permanent."""
    text = message.lower()
    return bool(ROLE_MISSING.search(text)) or any(s in text for s in (*AUTH_FAILURES, *NO_CONNECT_RIGHT))


def _run_id() -> str | None:
    if "prefect" not in sys.modules:  # no flow run without Prefect loaded: spare a process the import
        return None
    try:
        from prefect.runtime import flow_run  # noqa: PLC0415 - the policy works without Prefect running

        run_id = flow_run.get_id()
    except Exception:  # noqa: BLE001 - outside any run (or Prefect unavailable): once per process
        return None
    return str(run_id) if run_id else None


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    if "prefect" not in sys.modules:
        return log
    try:
        from prefect import get_run_logger  # noqa: PLC0415
        from prefect.exceptions import MissingContextError  # noqa: PLC0415
    except ImportError:
        return log
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def warn_unverified(what: str, sslmode: str, howto: str) -> bool:
    """Log a WARNING that `what` is reached without checking the server's identity: once per flow run and
    target (once per process outside a run). Returns True when it logged."""
    if sslmode not in UNVERIFIED:
        return False
    key = (_run_id(), what)
    with _lock:
        if key in _warned:
            return False
        _warned.add(key)
    _logger().warning(
        "%s: sslmode=%s does not check the server's identity (any certificate is accepted, so a machine in the "
        "path can pose as the database and read the password and data); set sslmode=verify-full with the CA: %s",
        what, sslmode, howto)
    return True


CONTAINER_CA_DIR = "/tmp"  # noqa: S108 - inside the container; the file is a public CA certificate, named by its hash


class CAInContainer(Executor):
    """An executor inside a container whose pg tools get the worker's CA file: a command carrying
    PGSSLROOTCERT=<worker path> has that file copied in (once, named by its hash) and the variable pointed at the
    copy, so verify-full works for backup.dump_on=container without mounting anything into the container."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.where = inner, inner.where
        self._staged: dict[str, str] = {}

    def _in_container(self, worker_path: str) -> str:
        if worker_path not in self._staged:
            data = Path(worker_path).read_bytes()
            remote = f"{CONTAINER_CA_DIR}/odoo-stack-ops-ca-{hashlib.sha256(data).hexdigest()[:16]}.crt"
            self.inner.put(worker_path, remote, mode=0o644)
            self._staged[worker_path] = remote
        return self._staged[worker_path]

    def _stream(self, command: Command, *, timeout: float | None, check: bool,
                stdin: Stdin) -> AbstractContextManager[Stream]:
        ca = command.env.get("PGSSLROOTCERT")
        if isinstance(ca, str) and ca:
            command = Command(command.argv, {**command.env, "PGSSLROOTCERT": self._in_container(ca)}, command.cwd)
        return self.inner._stream(command, timeout=timeout, check=check, stdin=stdin)

    def get(self, remote_path: str, local_path: str) -> None:
        self.inner.get(remote_path, local_path)

    def put(self, local_path: str, remote_path: str, mode: int = 0o600) -> None:
        self.inner.put(local_path, remote_path, mode)
