"""What a stack update changes, worked out from Engine API inspect data (pure: no I/O, tested directly).

A container is recreated the way compose does it: same name, labels, mounts, networks, environment, restart
policy, command and healthcheck, but whatever the OLD image supplied (its Env, Cmd, Entrypoint, labels, exposed
ports, volumes, healthcheck, workdir, user, stop signal) is left out, so the new image's defaults apply, as they
would with `docker compose up` after a pull.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from odoo_stack_ops.errors import OpsError

ODOO = "odoo-core"
# Config keys an image supplies; dropped from the create body when they equal the old image's value
IMAGE_KEYS = ("Cmd", "Entrypoint", "WorkingDir", "User", "Healthcheck", "StopSignal", "Shell", "OnBuild")
# Inspect keys that describe one container instance, never its configuration
RUNTIME_KEYS = ("AttachStdin", "AttachStdout", "AttachStderr")
DEFAULT_STOP_SIGNALS = ("", "15", "SIGTERM", "TERM")
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Record:
    """What a service ran before the update: the rollback target (image id and digests) and its configuration."""

    service: str
    name: str
    container_id: str
    image_ref: str  # Config.Image: the name:tag compose asked for
    image_id: str  # sha256:… of the local image the container runs
    repo_digests: tuple[str, ...]  # repo@sha256:… the registry knows that image by
    attrs: dict[str, Any] = field(repr=False, hash=False, compare=False)
    image_config: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def digest(self) -> str:
        """The registry digest of the running image (its repository's), else the local image id."""
        return repo_digest(self.repo_digests, self.image_ref) or self.image_id


@dataclass(frozen=True)
class UpdatePlan:
    """Services whose image changed, in the order they are recreated (odoo-core last), and the others."""

    steps: list[str]
    unchanged: list[str]
    new_images: dict[str, str]  # service -> new local image id

    @property
    def nothing_to_do(self) -> bool:
        return not self.steps


def check_services(requested: list[str], configured: list[str]) -> list[str]:
    """The services to act on (default: every configured one); unknown or malformed names refused."""
    bad = [s for s in requested if not SERVICE_NAME.match(s)]
    if bad:
        raise OpsError(f"refusing service names {bad!r}: letters, digits, '_', '.', '-' only")
    unknown = [s for s in requested if s not in configured]
    if unknown:
        raise OpsError(f"unknown service(s) {unknown}; the stack's containers are {configured}")
    return list(dict.fromkeys(requested)) or list(configured)


def order_services(services: list[str]) -> list[str]:
    """The stack's order, odoo-core last (it goes after its backup, once everything it talks to is updated)."""
    return [s for s in services if s != ODOO] + [s for s in services if s == ODOO]


def split_ref(ref: str) -> tuple[str, str]:
    """('repository', 'tag or @digest') of an image reference; a registry port is not a tag."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def repo_digest(repo_digests: tuple[str, ...] | list[str], ref: str) -> str | None:
    """The sha256 digest among an image's RepoDigests that belongs to `ref`'s repository."""
    repo = split_ref(ref)[0]
    short = repo.removeprefix("docker.io/").removeprefix("library/")
    for item in repo_digests:
        name, _, digest = item.partition("@")
        if name == repo or name.removeprefix("docker.io/").removeprefix("library/") == short:
            return digest
    return None


def plan_update(records: dict[str, Record], new_images: dict[str, str]) -> UpdatePlan:
    """Which services change: those whose pulled image id differs from the one their container runs."""
    changed = [s for s in records if new_images.get(s) and new_images[s] != records[s].image_id]
    return UpdatePlan(steps=order_services(changed), unchanged=[s for s in records if s not in changed],
                      new_images={s: new_images[s] for s in changed})


def dry_run_rows(records: dict[str, Record], registry: dict[str, str | Exception]) -> list[dict[str, str]]:
    """One row per service: running digest, registry digest, and whether an update would recreate it."""
    rows = []
    for service, rec in records.items():
        found = registry.get(service)
        if isinstance(found, Exception) or found is None:
            verdict, new = f"unknown: {found}", "?"
        else:
            new = found
            verdict = "unchanged" if found in _digests(rec) else "would change"
        rows.append({"service": service, "image": rec.image_ref, "running": rec.digest, "registry": new,
                     "update": verdict})
    return rows


def _digests(rec: Record) -> set[str]:
    return {d.partition("@")[2] for d in rec.repo_digests} | {rec.image_id}


def _same(a: Any, b: Any) -> bool:
    """Equal, with null and empty treated alike (podman reports Entrypoint [] where the image has none)."""
    return (a or None) == (b or None)


def creation_body(attrs: dict[str, Any], image_config: dict[str, Any], image: str | None = None) -> dict[str, Any]:
    """The Engine API create body that recreates the inspected container (`attrs`) from `image` (default: the
    name it was created from), leaving out what its old image (`image_config`) supplied."""
    config = copy.deepcopy(attrs.get("Config") or {})
    img = image_config or {}
    body: dict[str, Any] = {k: v for k, v in config.items() if k not in RUNTIME_KEYS}
    body["Image"] = image or config.get("Image")
    hostname = config.get("Hostname") or ""
    mode = (attrs.get("HostConfig") or {}).get("NetworkMode") or ""
    # the default (the container's short id) or the host's name (host network: Docker refuses a hostname there)
    if hostname and (hostname == (attrs.get("Id") or "")[:len(hostname)] or mode == "host"
                     or mode.startswith("container:")):
        body.pop("Hostname", None)
        body.pop("Domainname", None)
    runtime_env = {f"HOSTNAME={hostname}"} if "Hostname" not in body else set()
    image_env = set(img.get("Env") or [])
    body["Env"] = [e for e in config.get("Env") or [] if e not in image_env and e not in runtime_env]
    for key in IMAGE_KEYS:
        if key in body and (_same(body[key], img.get(key)) or (key == "WorkingDir" and body[key] == "/"
                                                                and not img.get(key))):
            body.pop(key)
    if body.get("StopSignal") in DEFAULT_STOP_SIGNALS:
        body.pop("StopSignal", None)
    if not body.get("StopTimeout"):
        body.pop("StopTimeout", None)
    image_labels = img.get("Labels") or {}
    body["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    for key in ("ExposedPorts", "Volumes"):
        own = {k: v for k, v in (config.get(key) or {}).items() if k not in (img.get(key) or {})}
        body[key] = own or None
    host_config = copy.deepcopy(attrs.get("HostConfig") or {})
    host_config["Binds"] = (host_config.get("Binds") or []) + anonymous_volume_binds(attrs)
    body["HostConfig"] = host_config
    networks = attrs.get("NetworkSettings", {}).get("Networks") or {}
    if mode in networks:  # the primary network at create time; the others are connected afterwards
        body["NetworkingConfig"] = {"EndpointsConfig": {mode: endpoint_config(networks[mode], attrs)}}
    return body


def anonymous_volume_binds(attrs: dict[str, Any]) -> list[str]:
    """The old container's anonymous volumes, bound again at the same paths (compose carries them over so the
    data in an image's VOLUME survives a recreate)."""
    host_config = attrs.get("HostConfig") or {}
    taken = {b.split(":")[1] for b in host_config.get("Binds") or [] if b.count(":") >= 1}
    taken |= {m.get("Target") for m in host_config.get("Mounts") or []}
    return [f"{m['Name']}:{m['Destination']}{'' if m.get('RW', True) else ':ro'}"
            for m in attrs.get("Mounts") or []
            if m.get("Type") == "volume" and ANONYMOUS_VOLUME.match(m.get("Name") or "")
            and m.get("Destination") not in taken]


def endpoint_config(endpoint: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """A network endpoint as recorded, minus what Docker derives per container (its short id as an alias)."""
    short = (attrs.get("Id") or "")[:12]
    out: dict[str, Any] = {"Aliases": [a for a in endpoint.get("Aliases") or [] if a != short] or None}
    for key in ("IPAMConfig", "Links", "DriverOpts"):
        if endpoint.get(key):
            out[key] = endpoint[key]
    return out


def extra_networks(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Networks beyond the primary one, connected after the container is created."""
    networks = attrs.get("NetworkSettings", {}).get("Networks") or {}
    mode = (attrs.get("HostConfig") or {}).get("NetworkMode") or ""
    return {name: endpoint_config(ep, attrs) for name, ep in networks.items() if name != mode}


def config_diff(before: dict[str, Any], after: dict[str, Any], path: str = "") -> list[str]:
    """Field paths where two create bodies differ (Env and Binds compared as sets); [] means identical."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after)):
            out += config_diff(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return out
    if path.rsplit(".", 1)[-1] in ("Env", "Binds") and isinstance(before, list | None) and \
            isinstance(after, list | None):
        return [] if sorted(before or []) == sorted(after or []) else [path]
    return [] if _same(before, after) else [path]


def for_display(body: dict[str, Any]) -> dict[str, Any]:
    """A create body fit for an artifact: environment values masked (a container's environment holds its
    passwords, most of which this project never configured and so cannot redact), names kept."""
    shown = copy.deepcopy(body)
    shown["Env"] = [f"{e.partition('=')[0]}=***" for e in body.get("Env") or []]
    return shown


def old_name(name: str, container_id: str) -> str:
    """What the replaced container is renamed to while its successor takes the name (compose's scheme)."""
    return f"{container_id[:12]}_{name}"


def compose_argv(prefix: list[str], compose_dir: str, verb: str, services: list[str],
                 force_recreate: bool = False) -> list[str]:
    """The compose CLI for one verb on the droplet (method compose): pull, up (-d --no-deps), restart, start…"""
    for s in services:
        if not SERVICE_NAME.match(s):
            raise OpsError(f"refusing service name {s!r}")
    argv = [*prefix, "--project-directory", compose_dir, verb]
    if verb == "up":
        argv += ["-d", "--no-deps"] + (["--force-recreate"] if force_recreate else [])
    return [*argv, "--", *services] if services else argv
