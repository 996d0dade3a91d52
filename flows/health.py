"""Flows `health-sweep` (every minute) and `diagnose` (on demand): the seed's Health Checks, Monitoring
thresholds and Troubleshooting runbooks.

A sweep completes even when checks fail: the alert state machine notifies, not the run state, so a
minute-by-minute schedule never floods the channel (a Failed run would trigger the failure automation).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from odoo_stack_ops import shared_state
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.health import runbooks
from odoo_stack_ops.health.alerting import STATE_NAME, AlertPolicy, SweepState, parse_state
from tasks.common import logger, publish_markdown, publish_table, stack_run_name
from tasks.fleet import over_stacks
from tasks.health import (
    SweepOptions,
    container_runbook,
    database_runbook,
    evaluate_alerts,
    module_runbook,
    now_iso,
    record_checks,
    run_checks,
    send_alerts,
    table_rows,
)
from tasks.stack import health_gate, restart_service, up_service


@flow(name="health-sweep", flow_run_name=stack_run_name("health-sweep"),
      description="HTTP, database, containers, CPU/memory/disk/network; alerts that do not spam")
def health_sweep(
    stack_file: str | None = None,
    fail_after: int = 3,
    ok_after: int = 2,
    remind_minutes: float = 60,
    disk_paths: list[str] | None = None,
    endpoints: dict[str, str] | None = None,
    check_timeout_s: float = 10,
    slow_response_s: float = 2,
    container_stats: bool = True,
    stack: str | None = None,
) -> dict[str, Any]:
    """One sweep: check everything at once, step each check's alert state, post what changed, publish the table.

    disk_paths: paths whose filesystems are judged against the disk threshold (default "/").
    endpoints: service → URL, overriding the URLs derived from the configuration (Service Discovery table).
    """
    cfg = load_config(stack_file, stack=stack)
    opt = SweepOptions(disk_paths=disk_paths or ["/"], endpoints=endpoints or {}, check_timeout_s=check_timeout_s,
                       slow_response_s=slow_response_s, container_stats=container_stats)
    policy = AlertPolicy(fail_after=fail_after, ok_after=ok_after, remind_s=remind_minutes * 60)
    started = time.monotonic()
    with shared_state.held(cfg, STATE_NAME) as slot:
        state = parse_state(slot.text)
        reading = run_checks(cfg, state.samples, opt)
        now = time.time()
        checks, notices = evaluate_alerts(reading.results, state.checks, policy, cfg.name, now)
        checks, delivered = send_alerts(cfg, notices, checks, now)
        slot.save(SweepState(checks, {**state.samples, **reading.samples}).to_json())
    record_checks(cfg, reading.results, now)
    rows = table_rows(reading.results, checks)
    failing = sum(r.status == "fail" for r in reading.results)
    publish_table("health-sweep", rows, f"health of {cfg.name}: {failing} failing of {len(rows)} checks; "
                  f"{len(notices)} message(s) {'sent' if delivered else 'NOT delivered'}")
    return {"results": rows, "notices": [{"check": n.check, "action": n.action, "delivered": delivered}
                                         for n in notices], "seconds": round(time.monotonic() - started, 3)}


@flow(name="health-sweep", flow_run_name="health-sweep-fleet",
      description="Every stack's health sweep in one run: stacks as subflows, a few at once")
def health_fleet(
    stack_file: str | None = None,
    stacks: list[str] | None = None,
    max_parallel: int = 4,
    fail_after: int = 3,
    ok_after: int = 2,
    remind_minutes: float = 60,
    disk_paths: list[str] | None = None,
    check_timeout_s: float = 10,
    slow_response_s: float = 2,
    container_stats: bool = True,
) -> dict[str, dict[str, Any]]:
    """The sweep of every stack of the inventory (or of `stacks`), at most `max_parallel` at once, for many stacks
    every minute: one flow-run start a minute instead of one per stack. Each stack's alerts and table name it; a
    stack whose sweep fails does not stop the others, and the run fails at the end naming it."""
    params = {"fail_after": fail_after, "ok_after": ok_after, "remind_minutes": remind_minutes,
              "disk_paths": disk_paths, "check_timeout_s": check_timeout_s, "slow_response_s": slow_response_s,
              "container_stats": container_stats}
    return over_stacks(health_sweep, params, stack_file, stacks, max_parallel, "health-sweep",
                       "prefect deployment run health-sweep/every-minute-<stack>")


def apply_fix(cfg: StackConfig, conns: Connections, service: str, action: str) -> runbooks.Section:
    """The container runbook's fix (`docker compose up -d` / `restart`), health gated, as a report section."""
    title = f"Fix: {action} {service}"
    try:
        if action == "start":
            done = up_service(cfg, conns, service)
        else:
            restart_service(cfg, conns, service)
            done = "restarted"
        took = health_gate(cfg, conns, service)
    except Exception as exc:  # noqa: BLE001 - a diagnosis reports, it does not fail
        return runbooks.Section(title, "problem", f"{action} did not make {service} healthy: {exc}")
    return runbooks.Section(title, "ok", f"{service}: {done}; healthy after {took:.1f} s")


@flow(name="diagnose", description="The seed's troubleshooting runbooks, collected as one evidence artifact")
def diagnose(
    stack_file: str | None = None,
    service: str = "odoo-core",
    log_lines: int = 100,
    module_log_lines: int = 5000,
    database: str | None = None,
    odoo_dry_start: bool = False,
    fix: bool = False,
    stack: str | None = None,
) -> dict[str, Any]:
    """Container won't start, database connection failed, module installation failed: the evidence of each.

    odoo_dry_start: also run the seed's `odoo -d DB --stop-after-init` in the container (loads the registry
    against the database: heavy, so off by default; the container's log is always searched).
    fix: run what the container runbook points at (start a stopped container, restart an unhealthy one), then
    its health gate; the outcome is one more section (off by default: a diagnosis changes nothing).
    """
    cfg = load_config(stack_file, stack=stack)
    with Connections(cfg) as conns:
        container = container_runbook(cfg, conns, service, log_lines)
        sections = [
            container,
            database_runbook(cfg),
            module_runbook(cfg, conns, service, module_log_lines, database or cfg.database.name, odoo_dry_start),
        ]
        if fix and container.action:
            sections.append(apply_fix(cfg, conns, service, container.action))
    md = runbooks.evidence_markdown(cfg.name, service, now_iso(), sections)
    problems = [s.title for s in sections if s.verdict != "ok"]
    publish_markdown("diagnose", md, f"diagnosis of {service} on {cfg.name}: "
                     f"{'problems in ' + ', '.join(problems) if problems else 'no problem found'}")
    logger().info("diagnosis of %s: %s", service, "; ".join(f"{s.title}: {s.summary}" for s in sections))
    return {"verdicts": {s.title: s.verdict for s in sections}, "summaries": {s.title: s.summary for s in sections},
            "markdown": md}
