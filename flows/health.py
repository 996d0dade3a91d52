"""Flows `health-sweep` (every minute) and `diagnose` (on demand): the seed's Health Checks, Monitoring
thresholds and Troubleshooting runbooks. A sweep completes even when checks fail (the alert state machine
notifies, not the run state, so a minute-by-minute schedule never floods the channel)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from odoo_stack_ops.config import load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.health import checks, state
from odoo_stack_ops.health.evaluate import AlertPolicy
from tasks.common import logger, publish_markdown, publish_table
from tasks.health import evaluate_alerts, run_checks, table


@flow(name="health-sweep", description="HTTP, database, containers, CPU/memory/disk/network; alerts that do not spam")
def health_sweep(
    stack_file: str | None = None,
    fail_after: int = 3,
    ok_after: int = 2,
    remind_minutes: float = 60,
    disk_mounts: list[str] | None = None,
    timeout_s: float = 10,
    extra_urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One sweep; returns {"results": rows, "sent": messages}."""
    cfg = load_config(stack_file)
    path = cfg.state_dir.expanduser() / "health-state.json"
    states, samples = state.load(path)
    results = run_checks(cfg, samples, disk_mounts or ["/"], timeout_s, extra_urls)
    policy = AlertPolicy(fail_after=fail_after, ok_after=ok_after, remind_s=remind_minutes * 60)
    states, sent = evaluate_alerts(cfg, results, states, policy)
    state.save(path, states, samples)
    rows = table(results, states)
    publish_table("health-sweep", rows, f"health of {cfg.name}: "
                  f"{sum(r.status == 'fail' for r in results)} failing of {len(results)}")
    return {"results": rows, "sent": sent}


@flow(name="diagnose", description="The seed's troubleshooting runbooks, collected as one evidence artifact")
def diagnose(stack_file: str | None = None, service: str = "odoo-core", log_lines: int = 100) -> dict[str, Any]:
    """Container won't start / database connection failed / module installation failed: the evidence."""
    cfg = load_config(stack_file)
    evidence: dict[str, str] = {}
    with Connections(cfg) as conns:
        host = conns.host()
        for title, argv in (("df -h", ["df", "-h"]), ("free -m", ["free", "-m"])):
            r = host.run(argv, check=False, timeout=20)
            evidence[title] = r.stdout_text or r.stderr_text
        try:
            from odoo_stack_ops.executors.docker import find_container  # noqa: PLC0415

            c = find_container(conns.docker(), service, cfg.docker.compose_project)
            logs = c.logs(tail=log_lines, timestamps=True).decode("utf-8", "replace")
            evidence[f"{service}: last {log_lines} log lines"] = logs
            evidence[f"{service}: state"] = f"{c.status}, restarts {c.attrs.get('RestartCount')}, " \
                                            f"exit code {c.attrs.get('State', {}).get('ExitCode')}"
            missing = [ln for ln in c.logs(tail=2000).decode("utf-8", "replace").splitlines()
                       if "missing" in ln.lower() or "not installable" in ln.lower()]
            evidence["module installation: missing dependencies"] = "\n".join(missing) or "none found in the log"
        except Exception as exc:  # noqa: BLE001 - evidence of its own
            evidence[f"{service}: container"] = f"{type(exc).__name__}: {exc}"
    db = checks.database(cfg.database)
    evidence["database: TCP, TLS, credentials (SELECT 1)"] = "\n".join(
        f"{r.name}: {r.status} — {r.value} {r.evidence}" for r in db)
    md = "# Diagnosis\n\n" + "\n\n".join(f"## {k}\n\n```\n{v.strip()[:20000]}\n```" for k, v in evidence.items())
    publish_markdown("diagnose", md, f"diagnosis of {service} on {cfg.name}")
    logger().info("diagnosis collected: %s", ", ".join(evidence))
    return evidence
