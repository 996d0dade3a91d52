"""Flows `stack-update` and `stack-restart` (on demand): the seed's `docker compose pull && docker compose up -d`
and `docker compose restart SERVICE`, made safe.

Update: lock → record each service's image digest and configuration → pull → the services whose image changed,
one at a time, odoo-core last and only after a pre-update backup: recreate with the same configuration → health
gate. A failed gate puts that service and every one already updated back on its recorded image and
configuration, confirms their health, tells Mattermost and fails the run saying what to do. A kill or a cancel
skips that: the services an update may change are marked in shared state first, and the next run rolls them back
before anything else. A dry run lists the digests that would change and changes nothing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.backup import backup_one
from odoo_stack_ops.backup import layout
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.locks import stack_writer
from odoo_stack_ops.notify import alerted, notify
from odoo_stack_ops.signals import STOPS, finishing, stopped_how
from odoo_stack_ops.stack import plan as pl
from tasks.common import logger, publish_markdown, publish_table
from tasks.digitalocean import snapshot_before
from tasks.stack import (
    changing_services,
    health_gate,
    interrupted_update,
    mark_changing,
    pull_images,
    record_services,
    recreate_service,
    registry_digests,
    restart_service,
    roll_back_service,
)


class UpdateRequest(BaseModel):
    """What to update; the Prefect UI renders this as a form."""

    services: list[str] = Field(default_factory=list, description="Compose services to update (default: all)")
    dry_run: bool = Field(False, description="Only list the digests that would change; pull and change nothing")
    backup: bool | None = Field(None, description="Back up odoo's database first when odoo-core changes "
                                "(default: update.backup_before)")
    health_timeout_s: float | None = Field(None, description="Per-service health gate (default: "
                                           "update.health_timeout_s)")
    lock_wait_s: float | None = Field(None, description="Wait this long for another writer (default: "
                                      "update.lock_wait_s)")


@flow(name="stack-update", description="Pull new images and recreate services one at a time, health gated, "
      "rolled back to the previous digests on failure")
def stack_update(request: UpdateRequest | None = None, stack_file: str | None = None,
                 stack: str | None = None) -> dict[str, Any]:
    request = request or UpdateRequest()
    cfg = load_config(stack_file, stack=stack)
    services = pl.check_services(request.services, list(cfg.containers))
    timeout = request.health_timeout_s or cfg.update.health_timeout_s
    started = time.monotonic()
    if request.dry_run:
        if pending := [m["service"] for m in changing_services(cfg)]:  # its services may be down: no plan yet
            return {"dry_run": True, "rows": [], "result": f"dry run: nothing changed; an interrupted update of "
                    f"{', '.join(pending)} is rolled back by the next run, then it can be planned"}
        with Connections(cfg) as conns:
            records = record_services(cfg, conns, services)
            rows = pl.dry_run_rows(records, registry_digests(conns, records))
        publish_table("stack-update-dry-run", rows, f"stack update dry run on {cfg.name}: "
                      f"{sum(r['update'] == 'would change' for r in rows)} service(s) would change")
        return {"dry_run": True, "rows": rows, "result": "dry run: nothing changed"}
    wait = cfg.update.lock_wait_s if request.lock_wait_s is None else request.lock_wait_s
    outcome: dict[str, Any] = {"services": services, "method": cfg.update.method}
    with stack_writer(cfg, wait, "the stack update"), Connections(cfg) as conns:
        if marks := changing_services(cfg):
            outcome.update(_roll_back_interrupted(cfg, conns, marks, timeout, started))
            return _report(cfg, outcome, started)
        records = record_services(cfg, conns, services)
        publish_markdown("stack-update-recorded", recorded_markdown(records), f"configuration of {services} "
                         f"before the update of {cfg.name}")
        plan = pl.plan_update(records, pull_images(cfg, conns, records))
        outcome.update(plan={"recreate": plan.steps, "unchanged": plan.unchanged})
        if plan.nothing_to_do:
            outcome["result"] = "nothing to do: every image is current"
            return _report(cfg, outcome, started)
        if cfg.digitalocean.snapshot_before:  # before any container changes; a refused token stops the run here
            outcome["droplet_snapshot"] = snapshot_before(cfg, "stack-update")
        if pl.ODOO in plan.steps and (cfg.update.backup_before if request.backup is None else request.backup):
            point, _ = backup_one(cfg, cfg.database.name, layout.stamp(datetime.now(UTC)),
                                  run_verify=cfg.update.verify_backup)
            outcome["pre_update_backup"] = point.stamp
        updated: list[str] = []
        outcome["updated"] = {}
        mark_changing(cfg, [records[s] for s in plan.steps])  # a kill from here on is rolled back by the next run
        for service in plan.steps:
            rec = records[service]
            updated.append(service)
            try:
                recreate_service(cfg, conns, rec)
                took = health_gate(cfg, conns, service, timeout)
            except (Exception, *STOPS) as exc:  # a cancel or the worker's stop too: no service left half updated
                cancelled = isinstance(exc, STOPS)
                outcome["result"] = (f"{stopped_how(exc).upper()} at {service}" if cancelled
                                     else f"FAILED at {service}: {exc}")
                with finishing():
                    outcome["rollback"] = roll_back(cfg, conns, [records[s] for s in reversed(updated)], timeout)
                    if not rollback_failures(outcome["rollback"]):
                        mark_changing(cfg, [])
                    sent = _post(cfg, outcome, started, failed=True)
                if cancelled:  # the run ends cancelled, as asked; the rollback is in its artifact and post
                    raise
                raise OpsError(alerted(failure_message(service, exc, [records[s] for s in updated],
                                                       outcome["rollback"]), sent)) from exc
            outcome["updated"][service] = {"from": rec.digest, "to": plan.new_images[service],
                                           "healthy_after_s": took}
        mark_changing(cfg, [])
        outcome["result"] = f"updated {', '.join(plan.steps)}"
    return _report(cfg, outcome, started)


def _roll_back_interrupted(cfg: StackConfig, conns: Connections, marks: list[dict[str, Any]], timeout: float,
                           started: float) -> dict[str, Any]:
    """An update killed or cancelled while it changed containers left some on a new image that never passed its
    gate, stopped, or set aside: every service it marked goes back on the image it ran before (health confirmed)
    before anything else is done. Fails saying what to do by hand when that is not possible."""
    services = [m["service"] for m in marks]
    logger().warning("an earlier stack update was interrupted while it changed %s: rolling them back to the images "
                     "they ran before it", ", ".join(services))
    outcome: dict[str, Any] = {}
    try:
        records = interrupted_update(cfg, conns, marks)
        outcome["interrupted_update_rolled_back"] = roll_back(cfg, conns, list(reversed(records)), timeout)
    except Exception as exc:  # noqa: BLE001 - told below with what to do
        outcome["interrupted_update_rolled_back"] = {"all": f"ROLLBACK FAILED: {exc}"}
    if failed := rollback_failures(outcome["interrupted_update_rolled_back"]):
        outcome["result"] = f"FAILED to roll back an interrupted update of {', '.join(services)}"
        sent = _post(cfg, outcome, started, failed=True)
        previous = "; ".join(f"{m['service']}: {m['image_ref']} = {m['image_id']}" for m in marks)
        raise OpsError(alerted(f"an earlier stack update was interrupted while it changed {', '.join(services)}, and "
                               f"rolling it back failed: {failed}\nwhat to do: put each service back on its "
                               f"previous image by hand on the droplet (`docker tag <image id> <name:tag> && docker "
                               f"compose up -d --no-deps --force-recreate <service>`; {previous}), then run "
                               "stack-update again: it retries this rollback until it succeeds", sent))
    mark_changing(cfg, [])
    outcome["result"] = (f"rolled back an interrupted update of {', '.join(services)} to the images they ran before "
                         "it; nothing else was changed: run stack-update again to update")
    return outcome


def roll_back(cfg: StackConfig, conns: Connections, records: list[pl.Record], timeout: float) -> dict[str, str]:
    """Every given service back on its recorded image and configuration, health confirmed; one that fails
    does not stop the others."""
    out = {}
    for rec in records:
        try:
            roll_back_service(cfg, conns, rec)
            took = health_gate(cfg, conns, rec.service, timeout)
            out[rec.service] = f"back on {rec.digest}, healthy after {took:.1f} s"
        except Exception as exc:  # noqa: BLE001 - each service is rolled back regardless of the others
            logger().error("rollback of %s failed: %s", rec.service, exc)
            out[rec.service] = f"ROLLBACK FAILED: {exc}"
    return out


def rollback_failures(rollback: dict[str, str]) -> dict[str, str]:
    """The services roll_back could not put back, with why."""
    return {s: r for s, r in rollback.items() if r.startswith("ROLLBACK FAILED")}


def failure_message(service: str, exc: BaseException, updated: list[pl.Record], rollback: dict[str, str]) -> str:
    """What failed, where every touched service is now, and what the operator does next."""
    failed = list(rollback_failures(rollback))
    lines = [f"stack update failed at {service}: {exc}"]
    lines += [f"{s}: {r}" for s, r in rollback.items()]
    if failed:
        lines.append("what to do: for " + ", ".join(failed) + " recreate by hand on the droplet: " + "; ".join(
            f"`docker tag {r.image_id} {r.image_ref} && docker compose up -d --no-deps --force-recreate "
            f"{r.service}`" for r in updated if r.service in failed)
            + " (the recorded configuration is the run's `stack-update-recorded` artifact)")
    else:
        lines.append(f"what to do: every service is back on its previous image and healthy. Read {service}'s log "
                     "lines above, then pin a working tag in docker-compose.yml (or wait for a fixed image) "
                     "before running stack-update again; until then `docker compose pull` would fetch the "
                     "failing image again")
    return "\n".join(lines)


def recorded_markdown(records: dict[str, pl.Record]) -> str:
    """The recorded configuration per service (environment values masked): what a rollback by hand recreates."""
    lines = ["# Recorded before the stack update", ""]
    for rec in records.values():
        body = pl.for_display(pl.creation_body(rec.attrs, rec.image_config, rec.image_ref))
        lines += [f"## {rec.service}: `{rec.name}`", "", f"- image `{rec.image_ref}` = `{rec.image_id}`",
                  f"- registry digest `{rec.digest}`", "", "```json", json.dumps(body, indent=1, sort_keys=True),
                  "```", ""]
    return "\n".join(lines)


@flow(name="stack-restart", description="Restart one service or all (docker compose restart), health gated")
def stack_restart(services: list[str] | None = None, stack_file: str | None = None,
                  health_timeout_s: float | None = None, stack: str | None = None) -> dict[str, Any]:
    """Restart each service (odoo-core last) and wait for its health gate; fails naming the unhealthy one."""
    cfg = load_config(stack_file, stack=stack)
    chosen = pl.order_services(pl.check_services(services or [], list(cfg.containers)))
    outcome: dict[str, Any] = {"services": chosen, "healthy_after_s": {}}
    started = time.monotonic()
    with Connections(cfg) as conns:
        for service in chosen:
            restart_service(cfg, conns, service)
            try:
                outcome["healthy_after_s"][service] = health_gate(cfg, conns, service, health_timeout_s)
            except Exception as exc:
                outcome["result"] = f"FAILED: {service} is not healthy after its restart: {exc}"
                sent = _post(cfg, outcome, started, failed=True, what="restart")
                raise OpsError(alerted(f"{service} is not healthy after its restart: {exc}\nwhat to do: run "
                                       f"`prefect deployment run diagnose/on-demand -p service={service}` for its "
                                       "logs, disk and memory", sent)) from exc
    outcome["result"] = f"restarted {', '.join(chosen)}"
    return _report(cfg, outcome, started, what="restart")


def _report(cfg: StackConfig, outcome: dict[str, Any], started: float, what: str = "update") -> dict[str, Any]:
    _post(cfg, outcome, started, what=what)
    return outcome


def _post(cfg: StackConfig, outcome: dict[str, Any], started: float, failed: bool = False,
          what: str = "update") -> bool:
    """The run's artifact and Mattermost post; True when Mattermost took the post."""
    outcome["seconds"] = round(time.monotonic() - started, 1)
    md = f"# Stack {what}\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in outcome.items())
    publish_markdown(f"stack-{what}", md, f"stack {what} of {cfg.name}")
    return notify(cfg.mattermost, f"Stack {what} of {cfg.name}: {outcome.get('result')}", md,
                  level="danger" if failed else "good")
