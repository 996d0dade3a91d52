"""Health tasks: run every check concurrently with its own timeout; evaluate alerts; notify; report."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any

from prefect import task

from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.health import checks
from odoo_stack_ops.health.evaluate import AlertPolicy, AlertState, CheckResult, step
from odoo_stack_ops.notify import notify
from tasks.common import NO_RETRIES, logger

Probe = tuple[str, Any]


def plan_checks(cfg: StackConfig, conns: Connections, samples: dict[str, Any], now: float,
                mounts: list[str], urls: dict[str, str]) -> list[Probe]:
    """(name, zero-argument callable returning CheckResult or a list of them), one per check group."""
    probes: list[Probe] = [(f"http.{name}", lambda n=name, u=url: checks.http(f"http.{n}", u))
                           for name, url in urls.items()]
    probes.append(("db", lambda: checks.database(cfg.database)))
    probes.append(("containers", lambda: checks.containers(conns.docker(), list(cfg.containers),
                                                           cfg.docker.compose_project)))
    probes.append(("host", lambda: checks.resources(conns.host(), cfg.thresholds, samples, now, mounts)))
    if cfg.digitalocean.token is not None:
        probes.append(("do", lambda: checks.digitalocean(cfg, now)))
    return probes


def run_concurrently(probes: list[Probe], timeout_s: float) -> list[CheckResult]:
    """Every probe in parallel; one that overruns its timeout is a failed check, the others still count."""
    results: list[CheckResult] = []
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(probes)))) as pool:
        futures = [(name, pool.submit(fn)) for name, fn in probes]
        deadline = time.monotonic() + timeout_s
        for name, fut in futures:
            try:
                out = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results.append(CheckResult(name, "fail", "timeout", f"< {timeout_s:g} s", "no answer in time"))
                continue
            except Exception as exc:  # noqa: BLE001 - a crashed check is a failed check
                results.append(CheckResult(name, "fail", "error", "", f"{type(exc).__name__}: {exc}"[:300]))
                continue
            results.extend(out if isinstance(out, list) else [out])
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def service_urls(cfg: StackConfig) -> dict[str, str]:
    """The Service Discovery endpoints: Odoo's health URL, plus n8n's."""
    urls = {"odoo-core": cfg.odoo.health_url}
    n8n = cfg.containers.get("n8n")
    if n8n and n8n.health_path:
        urls["n8n"] = cfg.n8n.url.rstrip("/") + n8n.health_path
    return urls


@task(name="run-checks", **NO_RETRIES)
def run_checks(cfg: StackConfig, samples: dict[str, Any], mounts: list[str], timeout_s: float,
               extra_urls: dict[str, str] | None = None) -> list[CheckResult]:
    now = time.time()
    with Connections(cfg) as conns:
        probes = plan_checks(cfg, conns, samples, now, mounts, {**service_urls(cfg), **(extra_urls or {})})
        return run_concurrently(probes, timeout_s)


MESSAGES = {"alert": ("danger", "ALERT"), "remind": ("warning", "STILL FAILING"), "resolve": ("good", "RESOLVED")}


@task(name="evaluate-alerts", **NO_RETRIES)
def evaluate_alerts(cfg: StackConfig, results: list[CheckResult], states: dict[str, AlertState],
                    policy: AlertPolicy) -> tuple[dict[str, AlertState], list[dict[str, Any]]]:
    """Step each check's state machine and send what it says; returns new states and the sent messages."""
    now = time.time()
    sent = []
    seen = set()
    for r in results:
        seen.add(r.name)
        states[r.name], action = step(states.get(r.name, AlertState()), r, now, policy)
        if action is None:
            continue
        level, word = MESSAGES[action]
        since = states[r.name].since
        fields = {"value": r.value, "threshold": r.threshold}
        if since:
            fields["since"] = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        ok = notify(cfg.mattermost, f"{word}: {r.name} on {cfg.name}", r.evidence or r.value, level=level,
                    fields=fields)
        sent.append({"check": r.name, "action": action, "delivered": ok})
        logger().warning("%s %s: %s", word, r.name, r.value)
    return states, sent


def table(results: list[CheckResult], states: dict[str, AlertState]) -> list[dict[str, Any]]:
    rows = []
    for r in sorted(results, key=lambda r: (r.status != "fail", r.status != "warn", r.name)):
        since = states.get(r.name, AlertState()).since
        rows.append({"check": r.name, "status": r.status, "value": r.value, "threshold": r.threshold,
                     "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds") if since else "",
                     "evidence": r.evidence[:200]})
    return rows
