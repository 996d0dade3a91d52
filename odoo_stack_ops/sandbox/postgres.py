"""A throwaway PostgreSQL 15 cluster (initdb/pg_ctl as user postgres), optionally TLS-only like the managed one.

TCP connections authenticate with scram-sha-256 and a generated password (so password handling is really
exercised); the unix socket trusts. With tls=True the cluster's own test CA (made at start, like the CA
DigitalOcean publishes per cluster) signs a server certificate for 127.0.0.1 (IP SAN) and localhost, non-TLS TCP
connections are rejected as the managed cluster does, and clients use sslmode=verify-full with that CA.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from pydantic import SecretStr

from odoo_stack_ops.config import DatabaseConfig
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.prefect_local import free_port
from odoo_stack_ops.sandbox.tls import make_ca_and_cert

BINDIR = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "postgres"


def _demote() -> Any:
    """preexec_fn dropping root to the postgres user (initdb and postgres refuse to run as root)."""
    if os.getuid() != 0:
        return None
    pw = pwd.getpwnam(RUN_AS)

    def fn() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return fn


class PgCluster:
    """initdb + pg_ctl in a private directory; `start()`, `stop()`, and helpers for tests."""

    def __init__(self, base: Path | None = None, *, tls: bool = False, port: int | None = None,
                 bindir: Path = BINDIR) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="pg-"))
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = "postgres"
        self.password = SecretStr(secrets.token_urlsafe(18))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.ca_file: Path | None = None
        self.bindir = bindir

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(list(argv), preexec_fn=_demote(), capture_output=True, text=True, check=False,
                              cwd=self.base)
        if proc.returncode != 0:
            raise OpsError(f"{argv[0]} failed: {proc.stderr.strip()[-800:]}")

    def start(self) -> PgCluster:
        if not (self.bindir / "initdb").exists():
            raise OpsError(f"PostgreSQL server binaries missing in {self.bindir}: apt-get install postgresql-15")
        self.base.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password.get_secret_value() + "\n")
        if os.getuid() == 0:
            pw = pwd.getpwnam(RUN_AS)
            for p in (self.base, self.sock, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            # postgres must be able to traverse to its directory and to its binaries (e.g. in a root-owned venv)
            for parent in {*self.base.resolve().parents, *self.bindir.resolve().parents}:
                st = parent.stat()
                if st.st_uid == 0 and not st.st_mode & 0o001:
                    parent.chmod(st.st_mode | 0o001)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        opts = [f"-k {self.sock}", f"-h {self.host}", f"-p {self.port}", "-c fsync=off", "-c full_page_writes=off",
                "-c synchronous_commit=off", "-c max_connections=60"]
        if self.tls:
            self.ca_file, cert, key = make_ca_and_cert(self.base / "tls", self.host)
            if os.getuid() == 0:
                pw = pwd.getpwnam(RUN_AS)
                for p in (self.base / "tls", cert, key):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
            opts += ["-c ssl=on", f"-c ssl_cert_file={cert}", f"-c ssl_key_file={key}"]
            hba = self.data / "pg_hba.conf"
            hba.write_text("local all all trust\nhostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n"
                           "hostssl all all 0.0.0.0/0 scram-sha-256\nhostssl all all ::/0 scram-sha-256\n")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                  "-o", " ".join(opts), "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(OpsError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def tls_settings(self, sslmode: str | None = None) -> dict[str, Any]:
        """sslmode (verify-full with this cluster's CA when TLS is on, else disable) and sslrootcert."""
        mode = sslmode or ("verify-full" if self.tls else "disable")
        return {"sslmode": mode, **({"sslrootcert": str(self.ca_file)} if self.ca_file else {})}

    def database_config(self, dbname: str = "odoo_core", sslmode: str | None = None, **over: Any) -> DatabaseConfig:
        """The managed-database section pointing at this cluster (verify-full with its CA when TLS is on)."""
        tls = self.tls_settings(sslmode) | {k: over.pop(k) for k in ("sslrootcert",) if k in over}
        return DatabaseConfig(host=self.host, port=self.port, user=self.user, password=self.password, name=dbname,
                              databases=over.pop("databases", [dbname]), **tls, **over)

    def conninfo(self, dbname: str = "postgres", sslmode: str | None = None) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname,
                "password": self.password.get_secret_value(), **self.tls_settings(sslmode)}

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(**self.conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def prefect_server_env(self, dbname: str = "prefect") -> dict[str, str]:
        """Creates `dbname` and returns the settings that put a Prefect server's database in it (asyncpg, which
        ships with prefect; TLS verified against this cluster's CA when TLS is on; password outside the URL)."""
        self.createdb(dbname)
        env = {"PREFECT_SERVER_DATABASE_DRIVER": "postgresql+asyncpg", "PREFECT_SERVER_DATABASE_HOST": self.host,
               "PREFECT_SERVER_DATABASE_PORT": str(self.port), "PREFECT_SERVER_DATABASE_USER": self.user,
               "PREFECT_SERVER_DATABASE_NAME": dbname,
               "PREFECT_SERVER_DATABASE_PASSWORD": self.password.get_secret_value()}
        if self.ca_file:
            env |= {"PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_ENABLED": "true",
                    "PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_CA_FILE": str(self.ca_file)}
        return env

    def createdb(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')

    def dropdb(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
