"""The embedded local stack: every part of stack-spec.md that can run on this machine, wired as the droplet.

PostgreSQL 15 TLS-only (the managed database), an OpenSSH server (the droplet) whose Docker socket is podman's
API with the four seed containers, an S3 endpoint (Spaces) and a Mattermost webhook stand-in. `start()` seeds
an Odoo-like `odoo_core` with a filestore and writes a stack file the flows load like a real one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import psycopg
import yaml

from odoo_stack_ops.sandbox import odoo_data
from odoo_stack_ops.sandbox.images import HEALTH, build_image, start_stack, write_files
from odoo_stack_ops.sandbox.mattermost import MattermostStandIn
from odoo_stack_ops.sandbox.podman import PodmanService
from odoo_stack_ops.sandbox.postgres import PgCluster
from odoo_stack_ops.sandbox.s3 import S3Server
from odoo_stack_ops.sandbox.sshd import SshServer

PROJECT = "sandbox"
BUCKET = "odoo-erp-backups"


def stack_tree(*, pg: PgCluster, sshd: SshServer, podman: PodmanService, containers: dict[str, dict[str, Any]],
               s3: S3Server, bucket: str, mattermost: MattermostStandIn | None, state_dir: Path,
               prefix: str = "odoo-erp-prod") -> dict[str, Any]:
    """The configuration tree (plain values, as in a stack file) for a sandbox made of these parts."""
    return {
        "name": "sandbox",
        "sandbox": True,
        "ssh": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.key_file),
                "known_hosts": str(sshd.known_hosts)},
        "docker": {"mode": "ssh", "remote_socket": podman.socket_path, "compose_project": PROJECT},
        "database": {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password.get_secret_value(),
                     "name": "odoo_core", "databases": ["odoo_core", "odoo_dev"], **pg.tls_settings()},
        "odoo": {"health_url": containers["odoo-core"]["health_url"], "compose_dir": str(state_dir / "compose")},
        "n8n": {"url": containers["n8n"]["health_url"].rsplit("/", 1)[0]},
        "containers": container_specs(containers),
        "spaces": {"endpoint": s3.endpoint, "bucket": bucket, "prefix": prefix,
                   "access_key_id": s3.access_key.get_secret_value(),
                   "secret_access_key": s3.secret_key.get_secret_value()},
        "mattermost": {"webhook_url": mattermost.url} if mattermost else {},
        "backup": {"databases": ["odoo_core"], "verify_sample": 10},
        "state_dir": str(state_dir),
    }


def container_specs(containers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The `containers` section for the stand-ins: each on the port it really listens on, with its health path.

    Without it the defaults (Mattermost on 8065, …) point the health sweep at ports nothing in the sandbox
    listens on, and `http.mattermost` fails on every sweep."""
    return {service: {"service": service, "image": c.get("image", "sandbox"), "ports": [c["port"]],
                      "health_path": HEALTH[service]} for service, c in containers.items()}


def seed_odoo(pg: PgCluster, podman: PodmanService, containers: dict[str, dict[str, Any]], *, partners: int = 200,
              extra_tables: int = 300, files: int = 40) -> dict[str, bytes]:
    """Create odoo_core (Odoo-like content) and odoo_dev, and the odoo_core filestore in the volume."""
    for db in ("odoo_core", "odoo_dev"):
        pg.createdb(db)
    filestore = odoo_data.make_filestore(files)
    with psycopg.connect(**pg.conninfo("odoo_core")) as conn:
        odoo_data.populate(conn, partners=partners, extra_tables=extra_tables)
        odoo_data.register_attachments(conn, filestore)
    client = podman.client()
    try:
        odoo = client.containers.get(containers["odoo-core"]["container"])
        write_files(odoo, "/var/lib/odoo/filestore/odoo_core", filestore)
    finally:
        client.close()
    return filestore


def ops_dsn(pg: PgCluster) -> str:
    """A database `ops` on the sandbox cluster standing for Supabase (TLS verified with the cluster's CA)."""
    pg.createdb("ops")
    tls = pg.tls_settings()
    return (f"postgresql://{pg.user}:{pg.password.get_secret_value()}@{pg.host}:{pg.port}/ops"
            f"?sslmode={tls['sslmode']}" + (f"&sslrootcert={tls['sslrootcert']}" if "sslrootcert" in tls else ""))


class SandboxStack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pg: PgCluster | None = None
        self.sshd: SshServer | None = None
        self.podman: PodmanService | None = None
        self.s3: S3Server | None = None
        self.mattermost = MattermostStandIn()
        self.containers: dict[str, dict[str, Any]] = {}

    def start(self) -> Path:
        """Start everything, seed it, and write the stack file (mode 0600: it holds sandbox secrets)."""
        self.base.mkdir(parents=True, exist_ok=True)
        # each part is kept before it starts, so stop() also ends one a signal interrupted half-way
        self.pg = PgCluster(self.base / "pg", tls=True)
        self.pg.start()
        self.sshd = SshServer(self.base / "sshd")
        self.sshd.start()
        self.podman = PodmanService()  # its runroot path must stay under 50 characters
        self.podman.start()
        self.containers = start_stack(self.podman, build_image(self.podman), project=PROJECT)
        self.s3 = S3Server()
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        seed_odoo(self.pg, self.podman, self.containers)
        tree = stack_tree(pg=self.pg, sshd=self.sshd, podman=self.podman, containers=self.containers, s3=self.s3,
                          bucket=BUCKET, mattermost=self.mattermost, state_dir=self.base / "state")
        tree["supabase"] = {"db_dsn": ops_dsn(self.pg)}  # ops.logs and ops.health_checks: the report's history
        path = self.base / "stack.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(tree, fh, sort_keys=False)
        return path

    def stop(self) -> None:
        """Stop every part that was started, each regardless of the others.

        Containers go first, through the CLI on the service's own storage: the service's exec sessions each
        hold a conmon process, and they outlive a service stopped before its containers."""
        if self.podman is not None and self.podman.proc is not None:
            with contextlib.suppress(Exception):
                self.podman.podman("rm", "--all", "--force", "--time", "1", timeout=60)
        for part in (self.s3, self.podman, self.sshd, self.pg):
            if part is not None:
                with contextlib.suppress(Exception):  # tear down the rest regardless
                    part.stop()
        self.s3 = self.podman = self.sshd = self.pg = None
        self.mattermost.stop()
