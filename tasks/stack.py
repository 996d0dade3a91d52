"""Service-management tasks, one verb each: the seed's `docker compose` commands (start, stop, restart, pull,
up) and the steps of a stack update. Flows and the diagnose runbooks call them; each is a task run in the
Prefect UI with its own logs."""

from __future__ import annotations

import json
from typing import Any

from prefect import task

from odoo_stack_ops import shared_state
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.health.checks import service_urls
from odoo_stack_ops.stack import engine
from odoo_stack_ops.stack import plan as pl
from odoo_stack_ops.stack.registry import registry_digest
from tasks.common import NO_RETRIES, logger


def _compose(cfg: StackConfig, conns: Connections) -> engine.Compose | None:
    if cfg.update.method != "compose":
        return None
    return engine.Compose(conns.host(), cfg.update.compose_argv, cfg.odoo.compose_dir)


def _container_id(cfg: StackConfig, conns: Connections, service: str) -> str:
    """The service's container, running or not (one that exited at once must still be found and judged)."""
    conns.forget(service)
    return str(_find_any(cfg, conns, service)["Id"])


@task(name="record-services", **NO_RETRIES)
def record_services(cfg: StackConfig, conns: Connections, services: list[str]) -> dict[str, pl.Record]:
    """Each service's running image (id and registry digest) and full configuration: the rollback target."""
    records = {s: engine.record(conns.docker(), s, cfg.docker.compose_project) for s in services}
    for rec in records.values():
        logger().info("%s: %s runs %s (%s)", rec.service, rec.name, rec.image_ref, rec.digest)
    return records


@task(name="registry-digests", **NO_RETRIES)
def registry_digests(conns: Connections, records: dict[str, pl.Record]) -> dict[str, str | Exception]:
    """What each service's name:tag points at in its registry now (nothing is pulled)."""
    out: dict[str, str | Exception] = {}
    for service, rec in records.items():
        try:
            out[service] = registry_digest(conns.docker(), rec.image_ref)
        except OpsError as exc:
            out[service] = exc
    return out


@task(name="pull-images", **NO_RETRIES)
def pull_images(cfg: StackConfig, conns: Connections, records: dict[str, pl.Record]) -> dict[str, str]:
    """Pull each service's name:tag (each image once); returns service -> the local image id it now names."""
    compose = _compose(cfg, conns)
    if compose:
        compose.run("pull", list(records))
    ids: dict[str, str] = {}
    for ref in dict.fromkeys(r.image_ref for r in records.values()):
        ids[ref] = (str(conns.docker().api.inspect_image(ref)["Id"]) if compose
                    else engine.pull(conns.docker(), ref))
        logger().info("pulled %s: %s", ref, ids[ref])
    return {s: ids[r.image_ref] for s, r in records.items()}


@task(name="recreate-service", **NO_RETRIES)
def recreate_service(cfg: StackConfig, conns: Connections, rec: pl.Record) -> str:
    """The service's container recreated on the image its name:tag now names, configuration unchanged; returns
    the new container's id."""
    compose = _compose(cfg, conns)
    if compose:
        compose.run("up", [rec.service])
        new_id = _container_id(cfg, conns, rec.service)
    else:
        new_id = engine.recreate(conns.docker(), rec, cfg.update.stop_timeout_s)
    conns.forget(rec.service)
    return new_id


@task(name="health-gate", **NO_RETRIES)
def health_gate(cfg: StackConfig, conns: Connections, service: str, timeout_s: float | None = None) -> float:
    """Seconds until the service is healthy (its HTTP health path, else its healthcheck, else still running after
    update.stable_s); raises with the reason and the container's last log lines."""
    url = service_urls(cfg).get(service)
    took = engine.gate(conns.docker(), _container_id(cfg, conns, service), url,
                       timeout_s or cfg.update.health_timeout_s, cfg.update.stable_s)
    logger().info("%s healthy after %.1f s (%s)", service, took, url or "container state")
    return took


@task(name="roll-back-service", **NO_RETRIES)
def roll_back_service(cfg: StackConfig, conns: Connections, rec: pl.Record) -> str:
    """The service back on its recorded image (its name:tag re-pointed at it) and recorded configuration."""
    compose = _compose(cfg, conns)
    if compose:
        engine.retag(conns.docker(), rec)
        compose.run("up", [rec.service], force_recreate=True)
        new_id = _container_id(cfg, conns, rec.service)
    else:
        new_id = engine.restore(conns.docker(), rec, cfg.update.stop_timeout_s)
    conns.forget(rec.service)
    logger().warning("%s rolled back to %s (%s)", rec.service, rec.digest, rec.image_id)
    return new_id


UPDATE_MARK = "stack-update-changing"


@task(name="mark-changing", **NO_RETRIES)
def mark_changing(cfg: StackConfig, records: list[pl.Record]) -> None:
    """Before an update changes a container: which services it may change and their images, where every worker
    sees it (shared state), so that the next run rolls them back if this one is killed or cancelled half way;
    no records: the update ended (updated, or rolled back) and the mark is cleared."""
    with shared_state.held(cfg, UPDATE_MARK) as slot:
        slot.save(json.dumps([engine.marked(r) for r in records]) if records else "null")


def changing_services(cfg: StackConfig) -> list[dict[str, Any]]:
    """The marks an interrupted update left (none after an update that ended)."""
    with shared_state.held(cfg, UPDATE_MARK) as slot:
        return list(json.loads(slot.text) or []) if slot.text else []


@task(name="interrupted-update", **NO_RETRIES)
def interrupted_update(cfg: StackConfig, conns: Connections, marks: list[dict[str, Any]]) -> list[pl.Record]:
    """The rollback targets of the services an interrupted update may have changed (their tags pointed back)."""
    return [engine.record_from_mark(conns.docker(), m) for m in marks]


# --- the seed's service-management commands, for runbooks and the restart flow -----------------------------------

@task(name="start-service", **NO_RETRIES)
def start_service(cfg: StackConfig, conns: Connections, service: str) -> None:
    """`docker compose start SERVICE`: its stopped container started."""
    if compose := _compose(cfg, conns):
        compose.run("start", [service])
    else:
        ctr = _find_any(cfg, conns, service)
        engine.start(conns.docker(), ctr["Id"])
    conns.forget(service)


@task(name="stop-service", **NO_RETRIES)
def stop_service(cfg: StackConfig, conns: Connections, service: str) -> None:
    """`docker compose stop SERVICE`."""
    if compose := _compose(cfg, conns):
        compose.run("stop", [service])
    else:
        engine.stop(conns.docker(), _container_id(cfg, conns, service), cfg.update.stop_timeout_s)
    conns.forget(service)


@task(name="restart-service", **NO_RETRIES)
def restart_service(cfg: StackConfig, conns: Connections, service: str) -> None:
    """`docker compose restart SERVICE` (a stopped container is started)."""
    if compose := _compose(cfg, conns):
        compose.run("restart", [service])
    else:
        engine.restart(conns.docker(), _find_any(cfg, conns, service)["Id"], cfg.update.stop_timeout_s)
    conns.forget(service)


@task(name="pull-service", **NO_RETRIES)
def pull_service(cfg: StackConfig, conns: Connections, service: str) -> str:
    """`docker compose pull SERVICE`: the service's name:tag pulled (containers untouched); the new image id."""
    ref = str(_find_any(cfg, conns, service)["Config"]["Image"])
    if compose := _compose(cfg, conns):
        compose.run("pull", [service])
        return str(conns.docker().api.inspect_image(ref)["Id"])
    return engine.pull(conns.docker(), ref)


@task(name="up-service", **NO_RETRIES)
def up_service(cfg: StackConfig, conns: Connections, service: str) -> str:
    """`docker compose up -d SERVICE`: started if stopped, recreated if its name:tag names another image than
    the one it runs (after a pull). Returns what was done."""
    if compose := _compose(cfg, conns):
        compose.run("up", [service])
        return "compose up -d"
    attrs = _find_any(cfg, conns, service)
    client = conns.docker()
    if client.api.inspect_image(attrs["Config"]["Image"])["Id"] != attrs["Image"]:
        if not attrs["State"].get("Running"):
            engine.start(client, attrs["Id"])
        recreate_service.fn(cfg, conns, engine.record(client, service, cfg.docker.compose_project))
        return "recreated on the newer image"
    if not attrs["State"].get("Running"):
        engine.start(client, attrs["Id"])
        conns.forget(service)
        return "started"
    return "already up to date and running"


def _find_any(cfg: StackConfig, conns: Connections, service: str) -> dict[str, Any]:
    """Inspect data of the service's container, running or not (a running one wins)."""
    from odoo_stack_ops.health.checks import by_service  # noqa: PLC0415

    ctr = by_service(conns.docker(), cfg.docker.compose_project).get(service)
    if ctr is None:
        raise OpsError(f"no container for service {service}; create it with `docker compose up -d {service}` in "
                       f"{cfg.odoo.compose_dir} on the droplet")
    return dict(conns.docker().api.inspect_container(ctr.id))
