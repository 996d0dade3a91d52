"""Health tasks, one verb each: run the checks, evaluate alerts, send them, publish the table; and the
diagnose runbooks. Checks never raise (a failure is a result); only an unusable configuration fails a sweep."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from prefect import task

from odoo_stack_ops import digitalocean
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.health import checks, facts, history, runbooks
from odoo_stack_ops.health.alerting import (
    AlertPolicy,
    AlertState,
    Notice,
    delivered,
    forget_stale,
    iso,
    notice,
    step,
)
from odoo_stack_ops.health.checks import CheckResult, Probe, Reading
from odoo_stack_ops.logs.ship import make_sink
from odoo_stack_ops.notify import build_message, post
from odoo_stack_ops.redact import redact
from tasks.common import NO_RETRIES, logger


@dataclass(frozen=True)
class SweepOptions:
    """What a sweep probes and how patiently (flow parameters today; candidates for a `health` config section)."""

    disk_paths: list[str] = field(default_factory=lambda: ["/"])
    endpoints: dict[str, str] = field(default_factory=dict)
    check_timeout_s: float = 10.0
    slow_response_s: float = 2.0
    container_stats: bool = True


class _Lazy:
    """One host executor and one Docker client for all check threads, opened on first use, once."""

    def __init__(self, conns: Connections) -> None:
        self.conns = conns
        self.lock = threading.Lock()

    def host(self) -> Any:
        with self.lock:
            return self.conns.host()

    def docker(self) -> Any:
        with self.lock:
            return self.conns.docker()


def plan_probes(cfg: StackConfig, lazy: _Lazy, samples: dict[str, Any], now: float, opt: SweepOptions) -> list[Probe]:
    """Every check group of one sweep, each with its own timeout."""
    t = opt.check_timeout_s
    services = list(cfg.containers)
    project = cfg.docker.compose_project
    probes = [Probe(f"http.{svc}", lambda s=svc, u=url: checks.http(f"http.{s}", u, t, opt.slow_response_s), t + 1)
              for svc, url in checks.service_urls(cfg, opt.endpoints).items()]
    probes.append(Probe("db", lambda: checks.database(cfg.database, t), 3 * t + 1))
    probes.append(Probe("containers", lambda: checks.containers(lazy.docker(), services, project,
                                                                samples.get("restarts", {})), 2 * t))
    if opt.container_stats:
        probes.append(Probe("container-stats", lambda: checks.container_stats(
            lazy.docker(), services, project, cfg.thresholds, samples.get("container_stats", {}), now), 2 * t))
    probes.append(Probe("host", lambda: checks.host_resources(lazy.host(), cfg.thresholds, opt.disk_paths,
                                                              samples.get("host", {}), now, t), 2 * t))
    probes += freshness_probes(cfg, lazy, samples, now, t)
    if cfg.digitalocean.token is not None:
        probes.append(Probe("do", lambda: checks.digitalocean(cfg.digitalocean, cfg.thresholds, now, t,
                                                              (samples.get("do") or {}).get("droplet_id")), 2 * t))
        probes.append(Probe("do.cluster", lambda: digitalocean.cluster_backups_check(cfg, now, t), 2 * t))
    return probes


def freshness_probes(cfg: StackConfig, lazy: _Lazy, samples: dict[str, Any], now: float, t: float) -> list[Probe]:
    """The dead-man's switch: the newest verified backup, weekly n8n tag and shipped log line are recent enough."""
    probes = [Probe("backup.fresh", lambda: checks.backup_freshness(Bucket.open(cfg.spaces), cfg.backup.databases,
                                                                    cfg.backup.max_age_h, now), 3 * t)]
    if cfg.git.n8n_remote:
        probes.append(Probe("n8n.export.fresh", lambda: checks.n8n_freshness(cfg, samples.get("n8n_tag") or {}, now),
                            6 * t))
    if logs_configured(cfg):
        def lag() -> CheckResult:
            sink = make_sink(cfg)
            try:
                return checks.log_lag(lazy.docker(), sink, cfg.name, list(cfg.containers), cfg.docker.compose_project)
            finally:
                sink.close()
        probes.append(Probe("logs.shipping.lag", lag, 2 * t))
    return probes


def logs_configured(cfg: StackConfig) -> bool:
    sb = cfg.supabase
    return bool(sb.url and sb.service_role_key) if sb.sink == "rest" else sb.db_dsn is not None


@task(name="run-checks", **NO_RETRIES)
def run_checks(cfg: StackConfig, samples: dict[str, Any], opt: SweepOptions) -> Reading:
    """All checks at once; returns their results and the readings to keep."""
    now = time.time()
    with Connections(cfg) as conns:
        reading = checks.run_all(plan_probes(cfg, _Lazy(conns), samples, now, opt))
    failing = [r.name for r in reading.results if r.status == "fail"]
    logger().info("%d checks, %d failing%s", len(reading.results), len(failing),
                  f": {', '.join(failing)}" if failing else "")
    return reading


@task(name="evaluate-alerts", **NO_RETRIES)
def evaluate_alerts(results: list[CheckResult], states: dict[str, AlertState], policy: AlertPolicy, stack: str,
                    now: float) -> tuple[dict[str, AlertState], list[Notice]]:
    """Step each check's state machine; returns the new states and the messages due (pure)."""
    new = dict(states)
    due = []
    for r in results:
        before = new.get(r.name, AlertState())
        after, action = step(before, r.status, r.value, now, policy)
        new[r.name] = after
        if action is not None:
            due.append(notice(r.name, action, before, after, value=r.value, threshold=r.threshold,
                              evidence=r.evidence, now=now, stack=stack))
    return forget_stale(new, now, policy), due


def alert_payload(cfg: StackConfig, notices: list[Notice]) -> dict[str, Any]:
    """One webhook post per sweep: one coloured attachment per changed check."""
    parts = [build_message(cfg.mattermost, n.title, n.text, level=n.level, fields=n.fields) for n in notices]
    payload = parts[0]
    payload["attachments"] = [p["attachments"][0] for p in parts]
    return payload


@task(name="send-alerts", **NO_RETRIES)
def send_alerts(cfg: StackConfig, notices: list[Notice], states: dict[str, AlertState],
                now: float) -> tuple[dict[str, AlertState], bool]:
    """Post the due messages to Mattermost; a failed post leaves them due again next sweep (never raises)."""
    if not notices:
        return states, True
    if cfg.mattermost.webhook_url is None:  # nowhere to send: the table artifact is the record, nothing to retry
        for n in notices:
            logger().warning("%s (no Mattermost webhook configured)", n.title)
        return {**states, **{n.check: delivered(states[n.check], n.action, True, now) for n in notices}}, False
    ok = post(cfg.mattermost, alert_payload(cfg, notices))
    new = dict(states)
    for n in notices:
        new[n.check] = delivered(new[n.check], n.action, ok, now)
        logger().warning("%s%s", n.title, "" if ok else " (not delivered; will retry next sweep)")
    return new, ok


@task(name="record-checks", **NO_RETRIES)
def record_checks(cfg: StackConfig, results: list[CheckResult], now: float) -> int:
    """Every result into ops.health_checks (the weekly report's history), in the sweep's own transaction. Without
    SUPABASE_DB_URL there is nowhere to keep it; a failed write is a warning, not a failed sweep (the alerts of
    this sweep went out already, and a Failed run every minute would flood the failure automation)."""
    if cfg.supabase.db_dsn is None:
        logger().info("no SUPABASE_DB_URL: health history not kept")
        return 0
    rows = history.history_rows(results, cfg.name, datetime.fromtimestamp(now, UTC))
    try:
        return history.write_history(cfg.supabase.db_dsn.get_secret_value(), rows)
    except (psycopg.Error, OpsError) as exc:
        logger().warning("health history not written (%s: %s); the sweep itself is unaffected",
                         type(exc).__name__, redact(str(exc))[:300])
        return 0


def table_rows(results: list[CheckResult], states: dict[str, AlertState]) -> list[dict[str, Any]]:
    """The sweep table: failing first; `since` is when the current failure episode began."""
    order = {"fail": 0, "warn": 1, "ok": 2}
    rows = []
    for r in sorted(results, key=lambda r: (order.get(r.status, 3), r.name)):
        s = states.get(r.name, AlertState())
        rows.append({"check": r.name, "status": r.status, "value": r.value, "threshold": r.threshold,
                     "since": iso(s.since), "alerting": "yes" if s.alerting else "", "evidence": r.evidence[:300],
                     "seconds": round(r.duration, 3)})
    return rows


# --- diagnose -----------------------------------------------------------------------------------------------------

def _text(data: bytes | str) -> str:
    return redact(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)


@task(name="runbook-container", **NO_RETRIES)
def container_runbook(cfg: StackConfig, conns: Connections, service: str, lines: int) -> runbooks.Section:
    """Container won't start: its state, the last log lines, `df -h` and `free -m` on the droplet."""
    details: dict[str, str] = {}
    problems: list[str] = []
    action = None
    try:
        c = checks.by_service(conns.docker(), cfg.docker.compose_project).get(service)
        if c is None:
            problems.append(f"no container for service {service}")
        else:
            f = facts.docker_inspect(c.attrs)
            action = runbooks.container_action(f.running, f.health)
            details["state"] = (f"{f.name}: {f.status}, exit code {f.exit_code}, restarts {f.restarts}, health "
                                f"{f.health or 'no healthcheck'}, OOM killed {f.oom_killed}, started {f.started_at}, "
                                f"finished {f.finished_at or '-'}{', error ' + f.error if f.error else ''}")
            details[f"docker compose logs {service} --tail {lines}"] = _text(c.logs(tail=lines, timestamps=True))
            if not f.running:
                problems.append(f"{f.name} is {f.status} (exit code {f.exit_code}{', OOM killed' if f.oom_killed else ''})")
            elif f.health == "unhealthy":
                problems.append(f"{f.name} runs but is unhealthy")
    except Exception as exc:  # noqa: BLE001 - an unreachable Docker API is itself the finding
        problems.append(f"Docker API: {type(exc).__name__}: {_text(str(exc))[:300]}")
    for title, argv in (("df -h", ["df", "-h"]), ("free -m", ["free", "-m"])):
        try:
            r = conns.host().run(argv, check=False, timeout=30)
            details[title] = r.stdout_text + r.stderr_text
        except Exception as exc:  # noqa: BLE001 - an unreachable droplet is itself the finding
            details[title] = ""
            problems.append(f"{title} on the droplet: {type(exc).__name__}: {_text(str(exc))[:300]}")
    problems += runbooks.resource_findings(details["df -h"], details["free -m"], cfg.thresholds.disk_percent,
                                           cfg.thresholds.memory_percent)
    return runbooks.Section("Container won't start", "problem" if problems else "ok",
                            "; ".join(problems) or f"{service} is running; disk and memory below the thresholds",
                            details, action)


@task(name="runbook-database", **NO_RETRIES)
def database_runbook(cfg: StackConfig, timeout_s: float = 10.0) -> runbooks.Section:
    """Database connection failed: TCP (`nc -zv`), TLS (`openssl s_client -starttls postgres`), SELECT 1."""
    results = checks.database(cfg.database, timeout_s)
    lines = [f"{r.name}: {r.status} — {r.value} (wanted {r.threshold}){' — ' + r.evidence if r.evidence else ''}"
             for r in results]
    failed = [r for r in results if r.status == "fail"]
    db = cfg.database
    summary = (f"{failed[0].name} failed: {failed[0].value}" if failed
               else f"{db.host}:{db.port} reachable, TLS as sslmode={db.sslmode} demands, credentials accepted")
    details = {"TCP, TLS, credentials (SELECT 1)": "\n".join(lines)}
    if failed and failed[0].name == "db.tcp" and cfg.digitalocean.token is not None:
        details["trusted sources (DigitalOcean)"] = digitalocean.trusted_sources_hint(cfg, timeout_s)
        summary += f"; {details['trusted sources (DigitalOcean)']}"
    return runbooks.Section("Database connection failed", "problem" if failed else "ok", summary, details)


@task(name="runbook-modules", **NO_RETRIES)
def module_runbook(cfg: StackConfig, conns: Connections, service: str, lines: int, database: str,
                   dry_start: bool, timeout_s: float = 300.0) -> runbooks.Section:
    """Module installation failed: missing dependencies in the Odoo log (`grep -i missing`); with dry_start,
    the seed's `odoo -d DB --stop-after-init` inside the container too."""
    details: dict[str, str] = {}
    try:
        c = checks.by_service(conns.docker(), cfg.docker.compose_project).get(service)
        log = _text(c.logs(tail=lines)) if c is not None else ""
    except Exception as exc:  # noqa: BLE001 - reported as evidence
        log = ""
        details["Docker API"] = f"{type(exc).__name__}: {_text(str(exc))[:300]}"
    if dry_start:
        argv = ["odoo", "-d", ensure_identifier(database, "database"), "--stop-after-init"]
        try:
            r = conns.container(service).run(argv, check=False, timeout=timeout_s)
            log += "\n" + r.stdout_text + r.stderr_text
            details[" ".join(argv)] = f"exit code {r.exit_code}"
        except OpsError as exc:  # a stopped container or a timeout: the evidence says so
            details[" ".join(argv)] = str(exc)
    found = runbooks.missing_lines(log)
    modules = runbooks.missing_modules(found)
    details["grep -i missing"] = "\n".join(found) or "(no line mentions anything missing)"
    summary = (f"missing or unmet: {', '.join(modules)}" if modules
               else ("lines mention something missing; read them below" if found else "no missing dependency logged"))
    return runbooks.Section("Module installation failed", "problem" if found else "ok", summary, details)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
