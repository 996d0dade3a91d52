"""Service management through the Docker Engine API: record, pull, recreate, health gate, start/stop/restart.

The seed's `docker compose pull && docker compose up -d` done one service at a time with nothing but the
Engine API (over SSH, as every flow reaches the droplet), so no compose CLI is needed there; `Compose` runs
the CLI instead where an operator prefers it (`update.method: compose`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.docker import find_container
from odoo_stack_ops.redact import redact
from odoo_stack_ops.stack import plan as pl

log = logging.getLogger(__name__)


def record(client: Any, service: str, project: str | None) -> pl.Record:
    """The running container of `service`: its image (id, digests, name:tag) and its full inspect data."""
    ctr = find_container(client, service, project)
    attrs = client.api.inspect_container(ctr.id)
    try:
        image = client.api.inspect_image(attrs["Image"])
    except ImageNotFound:
        image = {"RepoDigests": [], "Config": {}}
    return pl.Record(service=service, name=attrs["Name"].lstrip("/"), container_id=attrs["Id"],
                     image_ref=attrs["Config"]["Image"], image_id=attrs["Image"],
                     repo_digests=tuple(image.get("RepoDigests") or []), attrs=attrs,
                     image_config=image.get("Config") or {})


MARK_FIELDS = ("service", "name", "container_id", "image_ref", "image_id", "repo_digests")


def marked(rec: pl.Record) -> dict[str, Any]:
    """What a later run needs to roll a service back to `rec` (its image; no configuration, so no secrets)."""
    return {k: list(getattr(rec, k)) if k == "repo_digests" else getattr(rec, k) for k in MARK_FIELDS}


def record_from_mark(client: Any, mark: dict[str, Any]) -> pl.Record:
    """The rollback target of a service an interrupted update may have changed: its name:tag pointed back at the
    marked image (pulled by digest if gone), whose configuration defaults are read from it; the container's
    configuration from the old container if it is still there (stopped, or set aside), else from the one that
    now has its name (an update changes the image, never the configuration)."""
    rec = pl.Record(**{k: tuple(v) if k == "repo_digests" else v for k, v in mark.items() if k in MARK_FIELDS},
                    attrs={}, image_config={})
    retag(client, rec)
    try:
        attrs = client.api.inspect_container(rec.container_id)
    except NotFound:
        try:
            attrs = client.api.inspect_container(rec.name)
        except NotFound:
            raise OpsError(f"no container {rec.name} of {rec.service} is left to roll back: recreate it by hand on "
                           f"the droplet (`docker compose up -d {rec.service}`, its name:tag now names the previous "
                           f"image {rec.image_id})") from None
    return pl.Record(rec.service, rec.name, rec.container_id, rec.image_ref, rec.image_id, rec.repo_digests, attrs,
                     image_config(client, rec.image_id))


def pull(client: Any, ref: str) -> str:
    """Pull `ref` (name:tag) and return the local image id it now names."""
    repo, tag = pl.split_ref(ref)
    try:
        if tag.startswith("@"):
            client.api.pull(repo + tag)
        else:
            client.api.pull(repo, tag=tag)
        return str(client.api.inspect_image(ref)["Id"])
    except DockerException as exc:
        raise OpsError(f"pulling {ref} failed: {exc}; check the image name and that the droplet reaches its "
                       "registry (docker login for a private one)") from exc


def retag(client: Any, rec: pl.Record) -> None:
    """Point the container's name:tag back at the recorded image (pulled by digest if it was removed), so the
    rollback and any later `docker compose up` run the previous image."""
    repo, tag = pl.split_ref(rec.image_ref)
    try:
        client.api.inspect_image(rec.image_id)
    except ImageNotFound:
        digest = pl.repo_digest(rec.repo_digests, rec.image_ref)
        if not digest:
            raise OpsError(f"the previous image {rec.image_id} of {rec.service} is gone and has no registry "
                           "digest to pull it by") from None
        client.api.pull(f"{repo}@{digest}")
    if not tag.startswith("@"):
        client.api.tag(rec.image_id, repo, tag, force=True)


def image_config(client: Any, image: str) -> dict[str, Any]:
    return client.api.inspect_image(image).get("Config") or {}


def recreate(client: Any, rec: pl.Record, stop_timeout: int) -> str:
    """Replace the recorded container by one made from the same configuration and the image its name:tag now
    names, as compose does: stop the old one, rename it aside, create and start the new one under the name,
    remove the old one (its anonymous volumes are bound into the new one). If the new one cannot be created
    or started, the old one gets its name back and is started again. Returns the new container's id."""
    body = pl.creation_body(rec.attrs, rec.image_config, rec.image_ref)
    aside = pl.old_name(rec.name, rec.container_id)
    client.api.stop(rec.container_id, timeout=stop_timeout)
    new_id, renamed = None, False
    try:
        client.api.rename(rec.container_id, aside)
        renamed = True
        new_id = client.api.create_container_from_config(body, name=rec.name)["Id"]
        for network, endpoint in pl.extra_networks(rec.attrs).items():
            client.api.connect_container_to_network(new_id, network, aliases=endpoint.get("Aliases"),
                                                    links=endpoint.get("Links"))
        client.api.start(new_id)
    except DockerException as exc:
        if new_id:
            with contextlib.suppress(DockerException):
                client.api.remove_container(new_id, force=True)
        if renamed:
            client.api.rename(rec.container_id, rec.name)
        client.api.start(rec.container_id)
        raise OpsError(f"{rec.name} could not be recreated ({exc}); the previous container was started again") \
            from exc
    remove(client, rec.container_id)
    log.info("%s recreated: %s -> %s", rec.name, rec.container_id[:12], new_id[:12])
    return str(new_id)


def restore(client: Any, rec: pl.Record, stop_timeout: int) -> str:
    """Rollback of one service: its name:tag back on the recorded image, and whatever container now holds the
    name (the new one, or a failed attempt's) replaced by one made from the recorded configuration."""
    retag(client, rec)
    body = pl.creation_body(rec.attrs, rec.image_config, rec.image_ref)
    with contextlib.suppress(NotFound):
        current = client.api.inspect_container(rec.name)
        if current["Id"] == rec.container_id:  # never replaced: just make sure it runs
            client.api.start(rec.container_id)
            return rec.container_id
        client.api.stop(current["Id"], timeout=stop_timeout)
        remove(client, current["Id"])
    with contextlib.suppress(NotFound):  # a run that died between rename and remove left the old one aside
        client.api.rename(pl.old_name(rec.name, rec.container_id), rec.name)
        client.api.start(rec.container_id)
        return rec.container_id
    new_id = client.api.create_container_from_config(body, name=rec.name)["Id"]
    for network, endpoint in pl.extra_networks(rec.attrs).items():
        client.api.connect_container_to_network(new_id, network, aliases=endpoint.get("Aliases"),
                                                links=endpoint.get("Links"))
    client.api.start(new_id)
    return str(new_id)


def remove(client: Any, container_id: str, attempts: int = 20) -> None:
    """Remove a container (anonymous volumes kept), retrying podman's 'state improper' during a restart."""
    for attempt in range(attempts):
        try:
            client.api.remove_container(container_id, force=True, v=False)
            return
        except NotFound:
            return
        except APIError as exc:
            if attempt == attempts - 1 or "state improper" not in str(exc):
                raise
            time.sleep(0.1 * (attempt + 1))


def log_tail(client: Any, container_id: str, lines: int = 20) -> str:
    with contextlib.suppress(DockerException):
        out = client.api.logs(container_id, tail=lines, stdout=True, stderr=True)
        return redact(out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)).strip()
    return ""


def gate(client: Any, container_id: str, url: str | None, timeout_s: float, stable_s: float = 5,
         poll_s: float = 0.2) -> float:
    """Seconds until the container is healthy: `url` answers 200; else its own healthcheck says healthy; else it
    has kept running `stable_s`. Raises VerificationFailed with the reason and its last log lines, at once when
    it exited and will not be restarted, otherwise at the timeout."""
    start = time.monotonic()
    last = "no answer yet"
    session = requests.Session()
    try:
        while True:
            try:
                info = client.api.inspect_container(container_id)
            except NotFound:
                raise VerificationFailed(f"container {container_id[:12]} disappeared during its health gate") \
                    from None
            state = info["State"]
            policy = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
            if not state.get("Running") and not state.get("Restarting") and policy in (None, "", "no"):
                last = f"it exited with code {state.get('ExitCode')}"
                break
            health = (state.get("Health") or {}).get("Status")
            if state.get("Running") and url:
                try:
                    resp = session.get(url, timeout=2)
                    if resp.status_code == 200:
                        return round(time.monotonic() - start, 2)
                    last = f"{url} answered HTTP {resp.status_code}"
                except requests.RequestException as exc:
                    last = f"{url}: {type(exc).__name__}"
            elif state.get("Running") and health:
                if health == "healthy":
                    return round(time.monotonic() - start, 2)
                last = f"its healthcheck says {health}"
            elif state.get("Running"):
                if time.monotonic() - start >= stable_s:
                    return round(time.monotonic() - start, 2)
            else:
                last = f"it is {state.get('Status')} (exit code {state.get('ExitCode')})"
            if time.monotonic() - start > timeout_s:
                last += f" after {timeout_s:.0f} s"
                break
            time.sleep(poll_s)
    finally:
        session.close()
    tail = log_tail(client, container_id)
    raise VerificationFailed(f"health gate failed: {last}" + (f"\n--- its last log lines ---\n{tail}" if tail else ""))


def start(client: Any, container_id: str) -> None:
    client.api.start(container_id)


def stop(client: Any, container_id: str, timeout: int) -> None:
    client.api.stop(container_id, timeout=timeout)


def restart(client: Any, container_id: str, timeout: int) -> None:
    client.api.restart(container_id, timeout=timeout)


class Compose:
    """The compose CLI on the droplet (update.method: compose): the same verbs, run in odoo.compose_dir."""

    def __init__(self, host: Executor, argv: list[str], compose_dir: str) -> None:
        self.host, self.argv, self.compose_dir = host, argv, compose_dir

    def run(self, verb: str, services: list[str], *, force_recreate: bool = False, timeout: float = 1800) -> str:
        argv = pl.compose_argv(self.argv, self.compose_dir, verb, services, force_recreate=force_recreate)
        return self.host.run(argv, timeout=timeout, hint=f"run `{' '.join(argv)}` on the droplet to see why"
                             ).stdout_text
