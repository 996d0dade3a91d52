"""check-config: validate the stack, then probe each endpoint and report what is reachable.

Each probe is independent and time-boxed; a failing probe is a row in the table, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.redact import redact


@dataclass(frozen=True)
class Probe:
    component: str
    target: str
    ok: bool | None  # None: not configured
    detail: str
    seconds: float


def _timed(component: str, target: str, fn: Callable[[], str]) -> Probe:
    start = time.monotonic()
    try:
        detail = fn()
        ok: bool | None = True
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        detail, ok = f"{type(exc).__name__}: {exc}".splitlines()[0][:160], False
    return Probe(component, target, ok, redact(detail), round(time.monotonic() - start, 3))


def _http(url: str, headers: dict[str, str] | None = None) -> str:
    resp = requests.get(url, headers=headers or {}, timeout=10)
    if resp.status_code >= 500:
        raise RuntimeError(f"HTTP {resp.status_code}")
    return f"HTTP {resp.status_code}"


def probe_all(cfg: StackConfig) -> list[Probe]:
    """Probe SSH, Docker, containers, database, Spaces, Odoo health and the integrations."""
    rows: list[Probe] = []
    with Connections(cfg) as conns:
        if cfg.ssh:
            rows.append(_timed("ssh", f"{cfg.ssh.user}@{cfg.ssh.host}:{cfg.ssh.port}",
                               conns.host().run(["uname", "-sr"], timeout=15).stdout_text.strip))
        rows.append(_timed("docker", cfg.docker.mode, lambda: "Docker API " + conns.docker().version()["Version"]))
        for service in cfg.containers:
            rows.append(_timed("container", service, lambda s=service: _container(conns, s)))
        rows.append(_timed("database", f"{cfg.database.host}:{cfg.database.port}", lambda: _database(cfg)))
    rows.append(_timed("spaces", f"{cfg.spaces.endpoint}/{cfg.spaces.bucket}", lambda: _spaces(cfg)))
    rows.append(_timed("odoo", cfg.odoo.health_url, lambda: _http(cfg.odoo.health_url)))
    rows.append(_timed("n8n", cfg.n8n.url, lambda: _http(cfg.n8n.url.rstrip("/") + "/healthz")))
    rows.append(_optional("supabase", cfg.supabase.url, lambda: _supabase(cfg)))
    rows.append(_optional("mattermost", "webhook" if cfg.mattermost.webhook_url else None,
                          lambda: "configured (not posted to)"))
    if cfg.digitalocean.token is not None:
        rows += cluster_rows(cfg)
    return rows


def cluster_rows(cfg: StackConfig) -> list[Probe]:
    """The managed cluster as DigitalOcean describes it: its own backups, its CA, its trusted sources."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from odoo_stack_ops import digitalocean  # noqa: PLC0415 - pydo only when a token is configured

    start = time.monotonic()
    try:
        facts = digitalocean.cluster_facts(cfg, datetime.now(UTC))
        parts = {"do-backups": facts.backups, "do-ca": facts.ca, "do-trusted": facts.trusted}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        parts = dict.fromkeys(("do-backups", "do-ca", "do-trusted"), ("fail", f"{type(exc).__name__}: {exc}"))
    took = round(time.monotonic() - start, 3)
    return [Probe(name, cfg.digitalocean.database_cluster, status != "fail", redact(detail), took)
            for name, (status, detail) in parts.items()]


def _optional(component: str, target: str | None, fn: Callable[[], str]) -> Probe:
    if not target:
        return Probe(component, "-", None, "not configured", 0.0)
    return _timed(component, target, fn)


def _container(conns: Connections, service: str) -> str:
    from odoo_stack_ops.executors.docker import find_container  # noqa: PLC0415

    c = find_container(conns.docker(), service, conns.cfg.docker.compose_project)
    return f"{c.name}: {c.status}"


def _database(cfg: StackConfig) -> str:
    from odoo_stack_ops.backup.database import connect  # noqa: PLC0415

    with connect(cfg.database) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        ssl = conn.pgconn.ssl_in_use
    if not ssl:
        return f"PostgreSQL {version}, TLS off"
    if cfg.database.sslmode == "verify-full":
        return f"PostgreSQL {version}, TLS on, server verified against {cfg.database.sslrootcert}"
    return (f"PostgreSQL {version}, TLS on, server identity NOT checked (sslmode={cfg.database.sslmode}; set "
            f"verify-full with the cluster's CA)")


def _spaces(cfg: StackConfig) -> str:
    from odoo_stack_ops.backup import spaces  # noqa: PLC0415

    spaces.check_access(spaces.client(cfg.spaces), cfg.spaces.bucket, cfg.spaces.prefix + "/")
    return "bucket reachable, credentials accepted"


def _supabase(cfg: StackConfig) -> str:
    key = cfg.supabase.service_role_key.get_secret_value() if cfg.supabase.service_role_key else ""
    return _http(f"{cfg.supabase.url.rstrip('/')}/rest/v1/", {"apikey": key, "Authorization": f"Bearer {key}"})


def render(rows: list[Probe], stacks: list[str] | None = None) -> str:
    """A plain-text table; with `stacks` (one per row), a first column names each row's stack."""
    mark = {True: "ok", False: "FAIL", None: "-"}
    table = [("component", "target", "status", "seconds", "detail")] + [
        (r.component, r.target, mark[r.ok], f"{r.seconds:.2f}", r.detail) for r in rows]
    if stacks is not None:
        table = [(s, *row) for s, row in zip(["stack", *stacks], table, strict=True)]
    n = len(table[0]) - 1
    widths = [min(max(len(row[i]) for row in table), 60) for i in range(n)]
    return "\n".join("  ".join(c.ljust(w)[:w] for c, w in zip(row[:n], widths, strict=True)) + "  " + row[n]
                     for row in table)
