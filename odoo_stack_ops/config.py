"""One typed model of the stack in stack-spec.md, loaded from a stack file, a .env file and the environment.

Precedence: stack file < .env file < process environment. Secret fields are SecretStr; a secret value written
as `prefect-secret:NAME` is read from the Prefect Secret block NAME. Every invalid field is reported in one
ConfigError, with no input values (they may be secrets), before any host is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from odoo_stack_ops import redact
from odoo_stack_ops.command import IDENTIFIER
from odoo_stack_ops.errors import ConfigError

SECRET_BLOCK_PREFIX = "prefect-secret:"  # noqa: S105 - a prefix, not a secret
SERVICES = ("odoo-core", "nginx-proxy", "n8n", "mattermost")


def plain_identifiers(names: list[str]) -> list[str]:
    """Database names go into commands and SQL: letters, digits and _ only."""
    bad = [d for d in names if not IDENTIFIER.match(d)]
    if bad:
        raise ValueError(f"not plain identifiers: {bad}")
    return names


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class SSHConfig(_Model):
    """How the worker reaches the droplet over SSH."""

    host: str = Field(description="Droplet address", examples=["178.128.112.214"])
    port: int = Field(22, ge=1, le=65535, description="SSH port")
    user: str = Field("root", description="SSH user", examples=["root"])
    key_file: Path | None = Field(None, description="Private key file (else the SSH agent / default keys)")
    private_key: SecretStr | None = Field(
        None, description="SSH_PRIVATE_KEY: the key itself (OpenSSH/PEM text) instead of key_file, e.g. "
        "`prefect-secret:ssh-private-key` for a worker whose flow runs start in fresh containers")
    key_passphrase: SecretStr | None = Field(None, description="Passphrase of key_file or private_key, if any")
    known_hosts: Path = Field(Path("~/.ssh/known_hosts"), description="known_hosts file used for strict checking")
    strict_host_key_checking: bool = Field(
        True, description="Refuse unknown or changed host keys. Turning this off is logged loudly on every connect."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP + handshake timeout")
    keepalive_s: int = Field(15, ge=0, description="SSH keepalive interval (0 = off)")


class DockerConfig(_Model):
    """How the Docker Engine API on the droplet is reached."""

    mode: Literal["ssh", "local", "tcp"] = Field(
        "ssh", description="ssh: the droplet's socket through the SSH connection; local: a unix socket here; tcp"
    )
    base_url: str | None = Field(
        None, description="For local/tcp: unix:///var/run/docker.sock or tcp://host:2376", examples=["unix:///var/run/docker.sock"]
    )
    remote_socket: str = Field("/var/run/docker.sock", description="For ssh: the Docker socket path on the droplet")
    compose_project: str | None = Field(None, description="Compose project label to narrow container lookups")
    tls_ca_cert: Path | None = Field(None, description="For tcp: CA that signed the daemon's certificate (ca.pem)")
    tls_client_cert: Path | None = Field(None, description="For tcp: this worker's client certificate (cert.pem)")
    tls_client_key: Path | None = Field(None, description="For tcp: the client certificate's key (key.pem)")

    @model_validator(mode="after")
    def _base_url_needed(self) -> DockerConfig:
        if self.mode in ("local", "tcp") and not self.base_url:
            raise ValueError(f"docker.base_url is required when docker.mode is {self.mode!r}")
        return self

    @model_validator(mode="after")
    def _tcp_needs_tls(self) -> DockerConfig:
        # the Engine API is root on the droplet: over TCP only mutual TLS (the daemon checks our client
        # certificate, we check its certificate against the CA) keeps it from whoever else reaches the port
        if self.mode != "tcp":
            return self
        missing = [f"docker.{n}" for n in ("tls_ca_cert", "tls_client_cert", "tls_client_key") if not getattr(self, n)]
        if missing:
            raise ValueError(
                f"docker.mode 'tcp' is only used with TLS and a client certificate; set {', '.join(missing)} (the "
                "ca.pem, cert.pem and key.pem made for a daemon started with --tlsverify, see "
                "https://docs.docker.com/engine/security/protect-access/), or use docker.mode 'ssh'")
        if self.base_url and not self.base_url.startswith(("tcp://", "https://")):
            raise ValueError("docker.base_url must be tcp://host:2376 (or https://) when docker.mode is 'tcp'")
        return self


class ContainerSpec(_Model):
    """One container of the stack, found by its compose service label."""

    service: str = Field(description="Compose service name (label com.docker.compose.service)")
    image: str = Field(description="Image the seed runs")
    ports: list[int] = Field(default_factory=list, description="Ports the service listens on")
    health_path: str | None = Field(None, description="HTTP path that answers 200 when healthy")


def _default_containers() -> dict[str, ContainerSpec]:
    return {
        "odoo-core": ContainerSpec(service="odoo-core", image="odoo:18.0", ports=[8069], health_path="/web/health"),
        "nginx-proxy": ContainerSpec(service="nginx-proxy", image="nginx:alpine", ports=[80, 443]),
        "n8n": ContainerSpec(service="n8n", image="n8nio/n8n", ports=[5678], health_path="/healthz"),
        "mattermost": ContainerSpec(
            service="mattermost", image="mattermost/mattermost-team", ports=[8065], health_path="/api/v4/system/ping"
        ),
    }


class DatabaseConfig(_Model):
    """DigitalOcean Managed PostgreSQL 15 `odoo-db-sgp1`."""

    host: str = Field(description="DB_HOST", examples=["odoo-db-sgp1-do-user-xxxxx.b.db.ondigitalocean.com"])
    port: int = Field(25060, ge=1, le=65535, description="DB_PORT")
    user: str = Field("odoo", description="DB_USER")
    password: SecretStr | None = Field(None, description="DB_PASSWORD")
    name: str = Field("odoo_core", description="DB_NAME: the production database")
    databases: list[str] = Field(["odoo_core", "odoo_dev"], description="Databases on the cluster")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "verify-full", description="libpq sslmode (DB_SSLMODE). verify-full checks the server's certificate "
        "against sslrootcert and its name; require only encrypts and is warned about on every run"
    )
    sslrootcert: Path | None = Field(
        None, description="DB_SSLROOTCERT: the cluster's CA certificate on the worker (DigitalOcean → Databases → "
        "cluster → Connection details → Download CA certificate, or `doctl databases get-ca <id>`)",
        examples=["~/.postgresql/odoo-db-sgp1-ca.crt"])
    pool_size: int = Field(25, ge=1, description="Connection pool size of the cluster")
    max_parallel_dumps: int = Field(
        2, ge=1, description="Dumps running at once on this cluster, across every stack using it (the Prefect limit "
        "`db-dumps-<host>-<port>`): twenty stacks on one cluster never exhaust its connections together")
    maintenance_db: str = Field("postgres", description="Database to connect to for CREATE/DROP DATABASE and locks "
                                "(DigitalOcean clusters also have `defaultdb`)")
    connect_timeout_s: int = Field(10, ge=1, description="libpq connect_timeout")

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not IDENTIFIER.match(v):
            raise ValueError("must be a plain identifier")
        return v

    _idents = field_validator("databases")(plain_identifiers)

    @field_validator("sslrootcert")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None  # libpq does not expand ~

    @model_validator(mode="after")
    def _ca_for_verifying_modes(self) -> DatabaseConfig:
        from odoo_stack_ops import pgtls  # noqa: PLC0415 - pgtls imports errors only; kept local to this class

        if self.sslmode in pgtls.VERIFYING and self.sslrootcert is None:
            raise ValueError(f"sslmode={self.sslmode} needs the cluster's CA certificate: "
                             f"{pgtls.DO_CA_HOWTO.format(cluster='<cluster>')}; or set sslmode: require "
                             f"(encrypted, but the server's identity is not checked)")
        return self

    def libpq_env(self, dbname: str | None = None) -> dict[str, str | SecretStr]:
        """Environment for pg_dump/psql/pg_restore: the password travels here, never in argv."""
        env: dict[str, str | SecretStr] = {
            "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
            "PGDATABASE": dbname or self.name, "PGSSLMODE": self.sslmode,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout_s),
        }
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.sslrootcert:
            env["PGSSLROOTCERT"] = str(self.sslrootcert)
        return env

    def connect_kwargs(self, dbname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect."""
        kw: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "dbname": dbname or self.name,
            "sslmode": self.sslmode, "connect_timeout": self.connect_timeout_s,
        }
        if self.password is not None:
            kw["password"] = self.password.get_secret_value()
        if self.sslrootcert:
            kw["sslrootcert"] = str(self.sslrootcert)
        return kw


class OdooConfig(_Model):
    """Odoo 18 CE in the `odoo-core` container."""

    admin_password: SecretStr | None = Field(None, description="ODOO_ADMIN_PASSWORD (database manager master password)")
    data_dir: str = Field("/var/lib/odoo", description="ODOO_DATA_DIR inside the container")
    filestore_volume: str = Field("odoo-web-data", description="Docker volume mounted at data_dir")
    config_file: str = Field("/etc/odoo/odoo.conf", description="odoo.conf inside the container")
    addons_paths: list[str] = Field(
        ["/mnt/extra-addons/ipai", "/mnt/extra-addons/oca"], description="Extra addons paths inside the container"
    )
    health_url: str = Field("http://127.0.0.1:8069/web/health", description="URL of /web/health as seen by the worker")
    compose_dir: str = Field("/opt/odoo", description="Directory on the droplet holding docker-compose.yml, ./addons, ./config")


class SpacesConfig(_Model):
    """DigitalOcean Spaces bucket for backups."""

    region: str = Field("sgp1", description="Spaces region")
    endpoint: str = Field("https://sgp1.digitaloceanspaces.com", description="S3 endpoint URL")
    bucket: str = Field(description="Bucket name", examples=["odoo-erp-backups"])
    prefix: str = Field("odoo-erp-prod", description="Key prefix under which this stack's backups live")
    access_key_id: SecretStr | None = Field(None, description="SPACES_ACCESS_KEY_ID")
    secret_access_key: SecretStr | None = Field(None, description="SPACES_SECRET_ACCESS_KEY")
    ca_bundle: Path | None = Field(None, description="CA bundle for a private endpoint")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return v.strip("/")


class SupabaseConfig(_Model):
    """Supabase project holding ops.logs."""

    url: str | None = Field(None, description="SUPABASE_URL")
    service_role_key: SecretStr | None = Field(None, description="SUPABASE_SERVICE_ROLE_KEY")
    db_dsn: SecretStr | None = Field(
        None, description="SUPABASE_DB_URL: direct PostgreSQL connection string. Its sslmode defaults to verify-full, "
        "which needs the project's CA in the URL: ?sslmode=verify-full&sslrootcert=/path/to/supabase-ca.crt",
        examples=["postgresql://postgres:***@db.<ref>.supabase.co:5432/postgres?sslmode=verify-full"
                  "&sslrootcert=/etc/odoo-stack-ops/supabase-ca.crt"])
    schema_name: str = Field("ops", description="Schema of the logs table")
    table: str = Field("logs", description="Logs table")
    sink: Literal["postgres", "rest"] = Field("postgres", description="Ship through the database (COPY) or PostgREST")

    @model_validator(mode="after")
    def _dsn_tls(self) -> SupabaseConfig:
        if self.db_dsn is None:
            return self
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only when a DSN is set

        from odoo_stack_ops import pgtls  # noqa: PLC0415 - kept local to this class

        try:
            params = conninfo_to_dict(self.db_dsn.get_secret_value())
        except Exception:  # noqa: BLE001 - the parser's message would quote the secret URL
            raise ValueError("SUPABASE_DB_URL is not a PostgreSQL connection URL or key=value string") from None
        mode = params.get("sslmode", pgtls.DEFAULT_SSLMODE)
        if mode in pgtls.VERIFYING and not params.get("sslrootcert"):
            raise ValueError(f"SUPABASE_DB_URL: sslmode={mode} (the default) needs the project's CA certificate: "
                             f"{pgtls.SUPABASE_CA_HOWTO}; or add sslmode=require (encrypted, identity not checked)")
        return self


class MattermostConfig(_Model):
    webhook_url: SecretStr | None = Field(None, description="MATTERMOST_WEBHOOK_URL (incoming webhook; the URL is a secret)")
    channel: str | None = Field(None, description="Channel override")
    username: str = Field("odoo-stack-ops", description="Shown as the poster")


class N8nConfig(_Model):
    url: str = Field("http://127.0.0.1:5678", description="n8n base URL as seen by the worker")
    api_key: SecretStr | None = Field(None, description="N8N_API_KEY for the public REST API")
    encryption_key: SecretStr | None = Field(None, description="N8N_ENCRYPTION_KEY")
    webhook_url: str | None = Field(None, description="WEBHOOK_URL")
    source: Literal["api", "cli"] = Field("api", description="Export through the REST API or the CLI in the container")
    cli_argv: list[str] = Field(["n8n"], min_length=1, description="argv prefix that runs the n8n CLI (set here, in "
                                "the stack file, never as a flow parameter)", examples=[["n8n"]])
    cli_where: Literal["container", "worker"] = Field(
        "container", description="Run the n8n CLI inside the n8n container or on the worker")


class GitConfig(_Model):
    n8n_remote: str | None = Field(None, description="Git remote for n8n workflow exports")
    config_remote: str | None = Field(None, description="Git remote for config files")
    branch: str = Field("main", description="Branch to push")
    token: SecretStr | None = Field(None, description="GIT_TOKEN for HTTPS remotes")
    ssh_key_file: Path | None = Field(None, description="Key for SSH remotes")
    known_hosts: Path | None = Field(None, description="known_hosts for SSH remotes")
    author: str = Field("odoo-stack-ops <ops@localhost>", description="Commit author")


class SmtpConfig(_Model):
    host: str | None = Field(None, description="SMTP_HOST")
    port: int = Field(587, description="SMTP_PORT")
    user: str | None = Field(None, description="SMTP_USER")
    password: SecretStr | None = Field(None, description="SMTP_PASSWORD")


class DigitalOceanConfig(_Model):
    token: SecretStr | None = Field(None, description="DIGITALOCEAN_TOKEN: read scopes are enough for monitoring and "
                                    "the cluster checks; snapshot_before also needs droplet:update and "
                                    "snapshot:delete (README: DigitalOcean token scopes)")
    api_endpoint: str = Field("https://api.digitalocean.com", description="API endpoint")
    droplet_name: str = Field("odoo-erp-prod", description="Droplet name")
    droplet_id: int | None = Field(None, description="Droplet id (looked up by name when empty)")
    database_cluster: str = Field("odoo-db-sgp1", description="Managed database cluster name")
    database_cluster_id: str | None = Field(None, description="The cluster's id (uuid; looked up by name when empty)")
    region: str = Field("sgp1", description="Region")
    ca_bundle: Path | None = Field(None, description="CA bundle for a private endpoint")
    snapshot_before: bool = Field(False, description="Take a droplet snapshot before module-upgrade (and "
                                  "stack/update) changes anything, and wait for it to complete")
    keep_snapshots: int = Field(3, ge=1, description="Keep this many of this project's newest droplet snapshots "
                                "(named odoo-stack-ops-<stack>-<stamp>-<reason>); older ones it made are deleted, "
                                "no other snapshot ever is")
    snapshot_timeout_s: float = Field(3600, gt=0, description="Give up waiting for the snapshot action after this long")
    snapshot_poll_s: float = Field(10, gt=0, description="Poll the snapshot action this often")
    cluster_backup_max_age_h: float = Field(
        26, gt=0, description="The cluster's newest own (daily) backup may be this old before the health sweep fails")
    worker_addresses: list[str] = Field(
        default_factory=list, description="Addresses the cluster sees this worker connect from (its public IP when "
        "behind NAT); empty: the local address used to reach database.host", examples=[["203.0.113.7"]])

    @field_validator("worker_addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        import ipaddress  # noqa: PLC0415 - only this validator needs it

        for address in v:
            ipaddress.ip_address(address)  # ValueError names the bad value, which is an address, not a secret
        return v

    @model_validator(mode="after")
    def _snapshot_needs_token(self) -> DigitalOceanConfig:
        if self.snapshot_before and self.token is None:
            raise ValueError("digitalocean.snapshot_before needs digitalocean.token (DIGITALOCEAN_TOKEN) with the "
                             "scopes droplet:update, actions:read, snapshot:read and snapshot:delete")
        return self


class BackupConfig(_Model):
    schedule_cron: str = Field("0 2 * * *", description="Nightly backup schedule")
    timezone: str = Field("Asia/Singapore", description="Schedule time zone")
    window_minutes: int = Field(
        60, ge=1, le=720, description="Backup window: with many stacks, each nightly starts at a stable offset "
        "inside it (from the stack's name), so stacks sharing a cluster or a Spaces region do not start together")
    databases: list[str] = Field(["odoo_core"], description="Databases to back up")
    retention_days: int = Field(30, ge=1, description="Keep every backup younger than this")
    keep_daily: int = Field(0, ge=0, description="GFS: newest backup of each of the last N days")
    keep_weekly: int = Field(0, ge=0, description="GFS: newest backup of each of the last N weeks")
    keep_monthly: int = Field(0, ge=0, description="GFS: newest backup of each of the last N months")
    dump_on: Literal["worker", "container"] = Field("worker", description="Run pg_dump on the worker or in odoo-core")
    zstd_level: int = Field(3, ge=1, le=19, description="zstd level")
    zstd_threads: int = Field(2, ge=0, description="zstd worker threads")
    abort_incomplete_uploads_days: int = Field(
        3, ge=0, description="Bucket lifecycle rule: Spaces drops multipart uploads left incomplete this many days "
        "(0: leave the bucket's lifecycle alone)")
    gc_grace_h: float = Field(
        48, ge=0, description="Garbage-collection grace, hours: retention never deletes an unreferenced key (dump, "
        "filestore manifest, object) younger than this, nor an object a filestore manifest this young lists; "
        "multipart uploads and scratch databases are only cleaned up once this old. Must exceed the longest run; "
        "0 only where runs can never overlap (tests)", examples=[48])
    verify_server: DatabaseConfig | None = Field(
        None, description="Server where restore-verify creates its scratch database (default: the source server)"
    )
    verify_timeout_s: int = Field(4 * 3600, ge=60, description="Give up restore-verify after this long")
    verify_sample: int = Field(20, ge=0, description="Filestore objects re-hashed by verification")
    age_recipients: list[str] = Field(default_factory=list, description="age public keys; when set backups are encrypted")
    age_identity: SecretStr | None = Field(
        None, description="age private key, needed only by restores and restore drills (nightly verification "
        "checks tonight's plaintext copy, so the key may stay offline)")
    max_age_h: float = Field(
        26, gt=0, description="Dead-man's switch: the health sweep alerts when a database's newest VERIFIED backup "
        "in Spaces is older than this many hours (a nightly schedule plus slack)", examples=[26])
    lock_wait_s: float = Field(3600, ge=0, description="A writer (nightly, pre-upgrade backup, restore) waits this "
                               "long for another writer of the stack to finish, then fails")
    keep_previous_h: float = Field(
        0, ge=0, description="After a restore over a live database passed its health gate, keep the replaced copy "
        "(`<db>__before_<stamp>`) this many hours (0: drop it at once); older copies are dropped by the next writer")

    _idents = field_validator("databases")(plain_identifiers)


class RestoreConfig(_Model):
    staging_database: str = Field("odoo_dev", description="The staging refresh's target (neutralized before use)")
    export_dir: Path = Field(Path("~/odoo-stack-ops/exports"), description="Where the restore flow writes Odoo "
                             "database zips (flow parameters never choose a path)")
    min_free_after_mb: int = Field(1024, ge=0, description="A filestore restore needs the backup's filestore size "
                                   "plus this much free on Odoo's data volume (the restored copy is unpacked "
                                   "beside the live one); it is refused before anything is written otherwise")

    _ident = field_validator("staging_database")(lambda v: plain_identifiers([v])[0])


class Thresholds(_Model):
    cpu_percent: float = Field(80, description="CPU alert threshold")
    cpu_sustained_s: int = Field(300, description="CPU must stay above for this long")
    memory_percent: float = Field(90, description="Memory alert threshold")
    disk_percent: float = Field(85, description="Disk alert threshold")
    network_mbps: float = Field(100, description="Network alert threshold")


class UpdateConfig(_Model):
    """How `stack/update` and `stack/restart` change the running services."""

    method: Literal["engine", "compose"] = Field(
        "engine", description="engine: recreate each container through the Docker Engine API from its recorded "
        "configuration (no CLI needed on the droplet); compose: run the compose CLI there (`pull` then "
        "`up -d --no-deps SERVICE`) in odoo.compose_dir")
    compose_argv: list[str] = Field(["docker", "compose"], min_length=1, description="argv prefix of the compose "
                                    "CLI on the droplet (method compose)", examples=[["docker-compose"]])
    health_timeout_s: float = Field(120, gt=0, description="Each service must pass its health gate within this long")
    stable_s: float = Field(5, ge=0, description="A service with neither a health path nor a healthcheck passes "
                            "once it has stayed running this long")
    stop_timeout_s: int = Field(30, ge=0, description="Seconds a container gets to stop before it is killed")
    lock_wait_s: float = Field(600, ge=0, description="Wait this long for another writer of the stack (backup, "
                               "upgrade, restore, update) to finish")
    backup_before: bool = Field(True, description="Back up odoo's database and filestore before odoo-core's "
                                "image changes (the restore point if the new Odoo damages data)")
    verify_backup: bool = Field(True, description="Restore-verify that backup before the update goes on")


class StackConfig(_Model):
    """The whole stack: droplet, Docker, database, Odoo, Spaces, integrations, policies."""

    name: str = Field("odoo-erp-prod", description="Stack name (the droplet's)")
    sandbox: bool = Field(False, description="True for the embedded local test stack (relaxes nothing else)")
    ssh: SSHConfig | None = Field(None, description="Droplet SSH access")
    docker: DockerConfig = Field(default_factory=DockerConfig, description="Docker Engine API access")
    containers: dict[str, ContainerSpec] = Field(default_factory=_default_containers, description="Containers by service")
    database: DatabaseConfig
    odoo: OdooConfig = Field(default_factory=OdooConfig)
    spaces: SpacesConfig
    supabase: SupabaseConfig = Field(default_factory=SupabaseConfig)
    mattermost: MattermostConfig = Field(default_factory=MattermostConfig)
    n8n: N8nConfig = Field(default_factory=N8nConfig)
    git: GitConfig = Field(default_factory=GitConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    digitalocean: DigitalOceanConfig = Field(default_factory=DigitalOceanConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    restore: RestoreConfig = Field(default_factory=RestoreConfig)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    state_dir: Path = Field(Path("~/.local/state/odoo-stack-ops"), description="Worker-local caches (git working clones); alert states too when SUPABASE_DB_URL is unset")

    @model_validator(mode="after")
    def _ssh_needed(self) -> StackConfig:
        if self.docker.mode == "ssh" and self.ssh is None:
            raise ValueError("docker.mode is 'ssh' but no ssh section (SSH_HOST) is configured")
        return self

    def secrets(self) -> list[SecretStr]:
        """Every SecretStr value in the model (for redaction and the leak guard)."""
        found: list[SecretStr] = []

        def walk(obj: object) -> None:
            if isinstance(obj, SecretStr):
                found.append(obj)
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, dict):
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list):
                for v in obj:
                    walk(v)

        walk(self)
        return found


# Environment variable -> path in the model. The seed's names first, then our documented additions.
ENV_MAP: dict[str, tuple[str, ...]] = {
    "DB_HOST": ("database", "host"),
    "DB_PORT": ("database", "port"),
    "DB_USER": ("database", "user"),
    "DB_PASSWORD": ("database", "password"),
    "DB_NAME": ("database", "name"),
    "DB_SSLMODE": ("database", "sslmode"),
    "DB_SSLROOTCERT": ("database", "sslrootcert"),
    "ODOO_ADMIN_PASSWORD": ("odoo", "admin_password"),
    "ODOO_DATA_DIR": ("odoo", "data_dir"),
    "ODOO_HEALTH_URL": ("odoo", "health_url"),
    "SMTP_HOST": ("smtp", "host"),
    "SMTP_PORT": ("smtp", "port"),
    "SMTP_USER": ("smtp", "user"),
    "SMTP_PASSWORD": ("smtp", "password"),
    "SUPABASE_URL": ("supabase", "url"),
    "SUPABASE_SERVICE_ROLE_KEY": ("supabase", "service_role_key"),
    "SUPABASE_DB_URL": ("supabase", "db_dsn"),
    "N8N_ENCRYPTION_KEY": ("n8n", "encryption_key"),
    "N8N_API_KEY": ("n8n", "api_key"),
    "N8N_URL": ("n8n", "url"),
    "WEBHOOK_URL": ("n8n", "webhook_url"),
    "SSH_HOST": ("ssh", "host"),
    "SSH_PORT": ("ssh", "port"),
    "SSH_USER": ("ssh", "user"),
    "SSH_KEY_FILE": ("ssh", "key_file"),
    "SSH_PRIVATE_KEY": ("ssh", "private_key"),
    "SSH_KEY_PASSPHRASE": ("ssh", "key_passphrase"),
    "SSH_KNOWN_HOSTS": ("ssh", "known_hosts"),
    "DOCKER_MODE": ("docker", "mode"),
    "DOCKER_BASE_URL": ("docker", "base_url"),
    "SPACES_ENDPOINT": ("spaces", "endpoint"),
    "SPACES_REGION": ("spaces", "region"),
    "SPACES_BUCKET": ("spaces", "bucket"),
    "SPACES_PREFIX": ("spaces", "prefix"),
    "SPACES_ACCESS_KEY_ID": ("spaces", "access_key_id"),
    "SPACES_SECRET_ACCESS_KEY": ("spaces", "secret_access_key"),
    "DIGITALOCEAN_TOKEN": ("digitalocean", "token"),
    "MATTERMOST_WEBHOOK_URL": ("mattermost", "webhook_url"),
    "GIT_N8N_REMOTE": ("git", "n8n_remote"),
    "GIT_CONFIG_REMOTE": ("git", "config_remote"),
    "GIT_TOKEN": ("git", "token"),
    "BACKUP_AGE_RECIPIENTS": ("backup", "age_recipients"),
    "BACKUP_AGE_IDENTITY": ("backup", "age_identity"),
}
LIST_VARS = {"BACKUP_AGE_RECIPIENTS"}
STACK_FILE_VAR = "STACK_OPS_FILE"


def parse_dotenv(path: Path) -> dict[str, str]:
    """A .env file's KEY=VALUE pairs (python-dotenv's reading: comments, quotes, `export`); keys without a value
    are left out."""
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[path[-1]] = value


def _resolve_secret_blocks(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _resolve_secret_blocks(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_resolve_secret_blocks(v) for v in tree]
    if isinstance(tree, str) and tree.startswith(SECRET_BLOCK_PREFIX):
        from prefect.blocks.system import Secret  # noqa: PLC0415 - only when a block is named

        name = tree.removeprefix(SECRET_BLOCK_PREFIX)
        try:
            return str(Secret.load(name).get())
        except Exception as exc:
            raise ConfigError(
                f"Prefect Secret block {name!r} could not be loaded ({type(exc).__name__}); create it with "
                f"`python -m deployments.setup` or in the Prefect UI (Blocks → Secret)"
            ) from exc
    return tree


def format_errors(exc: ValidationError, where: str) -> str:
    """All validation errors, one per line, by field path; input values are never shown."""
    lines = [f"invalid stack configuration ({where}): {exc.error_count()} error(s)"]
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {loc}: {err['msg']}")
    lines.append("fix these in the stack file or environment (see stack.example.yaml), then run check-config again")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    stack: str | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | Path | None = None,
) -> StackConfig:
    """Load and validate one stack (of an inventory: `stack` names it); register every secret for redaction.
    Raises ConfigError listing all errors."""
    from odoo_stack_ops import inventory  # noqa: PLC0415 - inventory imports errors only; kept beside its use

    env = dict(os.environ if env is None else env)
    path = path or env.get(STACK_FILE_VAR)
    tree: dict[str, Any] = {}
    sources = []
    single = True
    if path:
        inv = inventory.read(path)
        stack, tree = inv.tree(stack)
        single = inv.single
        sources.append(str(inv.source) if single else f"{inv.source} [{stack}]")
    elif stack is not None:
        raise ConfigError(f"stack {stack!r} asked for but no inventory given: point {STACK_FILE_VAR} at it")
    overlay: dict[str, str] = {}
    if dotenv:
        overlay.update(parse_dotenv(Path(dotenv).expanduser()))
        sources.append(str(dotenv))
    overlay.update({k: v for k, v in inventory.stack_env(env, tree.get("name", ""), single).items() if k in ENV_MAP})
    for key, value in overlay.items():
        if key in ENV_MAP and value != "":
            parsed: Any = [v.strip() for v in value.split(",") if v.strip()] if key in LIST_VARS else value
            _set(tree, ENV_MAP[key], parsed)
    sources.append("environment")
    # register whatever secret-looking values we were given before validating, so no error can leak them
    for key, value in overlay.items():
        if ENV_MAP.get(key, ("",))[-1] in SECRET_FIELDS:
            redact.register(value)
    return validate_tree(_resolve_secret_blocks(tree), " + ".join(sources))


SECRET_FIELDS = {"password", "token", "api_key", "secret_access_key", "service_role_key", "encryption_key",
                 "webhook_url", "db_dsn", "key_passphrase", "private_key", "access_key_id", "age_identity", "admin_password"}


def validate_tree(tree: dict[str, Any], where: str = "stack") -> StackConfig:
    """Validate a configuration tree; register its secrets for redaction. Raises ConfigError with every error."""
    try:
        config = StackConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from None
    for secret in config.secrets():
        redact.register(secret)
    return config
