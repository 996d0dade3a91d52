"""DigitalOcean through pydo: a droplet snapshot before a risky change, and the managed cluster's own backups,
CA certificate and trusted sources.

One error policy for every call (`Api.call`): 429 waits the `Retry-After` the API sends (bounded) and tries again;
401 is a wrong or revoked token and 403 a token without the scope the call needs, both permanent and said so;
404 (which pydo returns as a body instead of raising) is raised. Snapshots this project makes are named
`odoo-stack-ops-<stack>-<stamp>-<reason>` (droplet snapshots take no tags); pruning only ever considers names of
that exact shape taken of this stack's droplet.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from odoo_stack_ops.config import DigitalOceanConfig, StackConfig
from odoo_stack_ops.errors import AccessDenied, ConnectError, OpsError
from odoo_stack_ops.redact import redact

log = logging.getLogger(__name__)

PREFIX = "odoo-stack-ops-"
RATE_LIMIT_TRIES = 5
MAX_RETRY_AFTER_S = 60.0
PER_PAGE = 200
TOKEN_HOWTO = ("tokens are made in the DigitalOcean control panel → API → Tokens (README: DigitalOcean token scopes) "  # noqa: S105
               "and read from DIGITALOCEAN_TOKEN")


class NotFound(OpsError):
    """The API answered 404 for a resource we named (a droplet, cluster, action or snapshot)."""


def _message(exc: Any) -> str:
    """DigitalOcean's own error text from an azure-core HttpResponseError (its JSON `message`), else its str."""
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else None
    except Exception:  # noqa: BLE001 - a body that is not JSON: fall back to the exception's text
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def retry_after_s(headers: Any, cap: float = MAX_RETRY_AFTER_S) -> float:
    """Seconds to wait from a 429's Retry-After (seconds, as DigitalOcean sends it), at least 1, at most cap
    (pure)."""
    try:
        wait = float((headers or {}).get("Retry-After", 1))
    except (TypeError, ValueError):
        wait = 1.0
    return min(max(wait, 1.0), cap)


class Api:
    """A pydo client and the project's error policy around each call; `sleep` is injectable for tests."""

    def __init__(self, do: DigitalOceanConfig, timeout: float = 20.0, sleep: Callable[[float], None] = time.sleep,
                 logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log) -> None:
        from odoo_stack_ops.health.checks import do_client  # noqa: PLC0415 - pydo is imported only when used

        if do.token is None:
            raise OpsError("no DigitalOcean token configured (digitalocean.token, DIGITALOCEAN_TOKEN)")
        self.client = do_client(do, timeout)
        self.sleep = sleep
        self.log = logger  # a flow run's logger, so waits and progress show in the run's logs
        self.rate_limited = 0

    def call(self, what: str, scope: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """fn(*args, **kw) under the error policy; `what` names the call and `scope` the token scope it needs."""
        from azure.core.exceptions import (  # noqa: PLC0415
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                out = fn(*args, **kw)
            except HttpResponseError as exc:
                code = exc.status_code
                text = _message(exc)
                if code == 429 and attempt < RATE_LIMIT_TRIES:
                    wait = retry_after_s(exc.response.headers if exc.response is not None else None)
                    self.rate_limited += 1
                    self.log.warning("DigitalOcean rate limit on %s (%s): waiting %.0f s as Retry-After asks "
                                "(attempt %d of %d)", what, text, wait, attempt, RATE_LIMIT_TRIES)
                    self.sleep(wait)
                    continue
                if code == 401:
                    raise AccessDenied(f"DigitalOcean refused the token for {what} (HTTP 401: {text}): it is wrong, "
                                       f"expired or revoked; not retried. {TOKEN_HOWTO}") from None
                if code == 403:
                    raise AccessDenied(f"the DigitalOcean token may not {what} (HTTP 403: {text}): add the scope "
                                       f"{scope} to the token (or use a read+write token); nothing was changed by "
                                       f"this call. {TOKEN_HOWTO}") from None
                if code == 404:
                    raise NotFound(f"DigitalOcean: {what}: not found (HTTP 404: {text})") from None
                if code == 429:
                    raise ConnectError(f"DigitalOcean kept rate-limiting {what} after {RATE_LIMIT_TRIES} tries "
                                       f"(HTTP 429: {text}); try again later") from None
                if code is not None and code >= 500:
                    raise ConnectError(f"DigitalOcean failed {what} (HTTP {code}: {text})") from None
                raise OpsError(f"DigitalOcean refused {what} (HTTP {code}: {text})") from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise ConnectError(f"DigitalOcean API unreachable for {what}: {redact(str(exc))[:300]}") from None
            if isinstance(out, dict) and out.get("id") == "not_found" and "message" in out:
                raise NotFound(f"DigitalOcean: {what}: not found ({out['message']})")  # pydo returns 404 bodies
            return out
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def pages(self, what: str, scope: str, fn: Callable[..., Any], key: str, **kw: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list (follows links.pages.next)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.call(what, scope, fn, per_page=PER_PAGE, page=page, **kw)
            items += body.get(key) or []
            if not ((body.get("links") or {}).get("pages") or {}).get("next"):
                return items
            page += 1


# --- droplet snapshots ------------------------------------------------------------------------------------------

def snapshot_prefix(stack: str) -> str:
    return f"{PREFIX}{stack}-"


def snapshot_name(stack: str, when: datetime, reason: str) -> str:
    """odoo-stack-ops-<stack>-<UTC stamp>-<reason> (pure); the reason is reduced to [a-z0-9-]."""
    slug = re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")[:40] or "change"
    return f"{snapshot_prefix(stack)}{when.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{slug}"


def is_ours(snapshot: dict[str, Any], stack: str, droplet_id: int) -> bool:
    """A droplet snapshot this project took of this stack's droplet (pure): the exact name shape, not a mere
    prefix, so stack `a` never claims stack `a-b`'s snapshots, and the droplet must match."""
    pattern = re.escape(snapshot_prefix(stack)) + r"\d{8}T\d{6}Z-[a-z0-9-]+"
    return (re.fullmatch(pattern, str(snapshot.get("name", ""))) is not None
            and str(snapshot.get("resource_id")) == str(droplet_id)
            and snapshot.get("resource_type", "droplet") == "droplet")


def prune_plan(snapshots: list[dict[str, Any]], stack: str, droplet_id: int, keep: int) -> list[dict[str, Any]]:
    """This project's snapshots of the droplet beyond the newest `keep` (pure); any other snapshot is never
    listed."""
    ours = sorted((s for s in snapshots if is_ours(s, stack, droplet_id)),
                  key=lambda s: (str(s.get("created_at", "")), str(s.get("name"))), reverse=True)
    return ours[keep:]


@dataclass(frozen=True)
class SnapshotResult:
    name: str
    snapshot_id: str | None
    action_id: int
    seconds: float
    deleted: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.snapshot_id, "action": self.action_id, "seconds": round(self.seconds, 1),
                "deleted": self.deleted}


def find_droplet_id(api: Api, do: DigitalOceanConfig) -> int:
    if do.droplet_id:
        return do.droplet_id
    found = api.call(f"list droplets named {do.droplet_name}", "droplet:read", api.client.droplets.list,
                     name=do.droplet_name).get("droplets") or []
    if not found:
        raise NotFound(f"DigitalOcean: no droplet named {do.droplet_name} (digitalocean.droplet_name)")
    return int(found[0]["id"])


def wait_for_action(api: Api, action_id: int, timeout_s: float, poll_s: float, what: str) -> dict[str, Any]:
    """Poll /v2/actions/{id} until completed, logging progress every third poll (at most each minute); errored or
    past the timeout raises."""
    log_every_s = min(3 * poll_s, 60.0)
    started = time.monotonic()
    last_log = started
    while True:
        action = api.call(f"read action {action_id}", "actions:read", api.client.actions.get,
                          action_id=action_id)["action"]
        status = action.get("status")
        took = time.monotonic() - started
        if status == "completed":
            api.log.info("%s: action %s completed after %.0f s", what, action_id, took)
            return action
        if status == "errored":
            raise OpsError(f"{what}: DigitalOcean action {action_id} errored after {took:.0f} s (started "
                           f"{action.get('started_at')}); see the droplet's History tab in the control panel")
        if took >= timeout_s:
            raise OpsError(f"{what}: DigitalOcean action {action_id} still {status} after {timeout_s:g} s "
                           "(digitalocean.snapshot_timeout_s); it may still finish: check the droplet's Snapshots tab")
        if time.monotonic() - last_log >= log_every_s:
            api.log.info("%s: action %s %s, %.0f s so far", what, action_id, status, took)
            last_log = time.monotonic()
        api.sleep(min(poll_s, max(0.0, timeout_s - took)))


def droplet_snapshots(api: Api) -> list[dict[str, Any]]:
    return api.pages("list droplet snapshots", "snapshot:read", api.client.snapshots.list, "snapshots",
                     resource_type="droplet")


def prune(api: Api, stack: str, droplet_id: int, keep: int) -> list[str]:
    """Delete this project's snapshots of the droplet beyond the newest `keep`; returns their names."""
    deleted = []
    for snap in prune_plan(droplet_snapshots(api), stack, droplet_id, keep):
        api.call(f"delete snapshot {snap['name']}", "snapshot:delete", api.client.snapshots.delete,
                 snapshot_id=snap["id"])
        api.log.info("deleted droplet snapshot %s (%s), beyond the newest %d", snap["name"], snap["id"], keep)
        deleted.append(str(snap["name"]))
    return deleted


def take_snapshot(cfg: StackConfig, reason: str, api: Api | None = None) -> SnapshotResult:
    """Snapshot the droplet, wait for the action to complete, then keep the newest keep_snapshots of ours.
    A token without write scope fails on the snapshot request, before anything was changed."""
    do = cfg.digitalocean
    api = api or Api(do)
    started = time.monotonic()
    droplet_id = find_droplet_id(api, do)
    name = snapshot_name(cfg.name, datetime.now(UTC), reason)
    what = f"snapshot droplet {droplet_id} as {name}"
    action = api.call(what, "droplet:update", api.client.droplet_actions.post, droplet_id=droplet_id,
                      body={"type": "snapshot", "name": name})["action"]
    api.log.info("%s: action %s %s", what, action["id"], action.get("status"))
    wait_for_action(api, int(action["id"]), do.snapshot_timeout_s, do.snapshot_poll_s, what)
    mine = [s for s in droplet_snapshots(api) if s.get("name") == name]
    if not mine:  # listed a moment later on a busy region; pruning then keeps one more of ours, never fewer
        api.log.warning("%s: the action completed but the snapshot is not listed yet", what)
    deleted = prune(api, cfg.name, droplet_id, do.keep_snapshots)
    return SnapshotResult(name, str(mine[0]["id"]) if mine else None, int(action["id"]), time.monotonic() - started,
                          deleted)


# --- the managed cluster ----------------------------------------------------------------------------------------

def find_cluster_id(api: Api, do: DigitalOceanConfig) -> str:
    if do.database_cluster_id:
        return do.database_cluster_id
    clusters = api.call("list database clusters", "database:read", api.client.databases.list_clusters)
    for cluster in clusters.get("databases") or []:
        if cluster.get("name") == do.database_cluster:
            return str(cluster["id"])
    raise NotFound(f"DigitalOcean: no database cluster named {do.database_cluster} (digitalocean.database_cluster)")


def newest_backup_age_h(backups: list[dict[str, Any]], now: datetime) -> float | None:
    """Hours since the newest of the cluster's own backups (pure); None when it has none."""
    stamps = [datetime.fromisoformat(str(b["created_at"]).replace("Z", "+00:00")) for b in backups
              if b.get("created_at")]
    return (now - max(stamps)).total_seconds() / 3600 if stamps else None


def backups_verdict(age_h: float | None, count: int, max_age_h: float) -> tuple[str, str]:
    """(status, value) for the cluster's own backups (pure): none or older than max_age_h fails."""
    if age_h is None:
        return "fail", "no backup listed"
    value = f"newest {age_h:.1f} h old ({count} kept)"
    return ("fail" if age_h > max_age_h else "ok"), value


def cluster_backups(api: Api, do: DigitalOceanConfig, cluster: str, now: datetime) -> tuple[str, str]:
    """(status, value) of the cluster's own backups: how old the newest is."""
    listed = api.call(f"list the backups of cluster {do.database_cluster}", "database:read",
                      api.client.databases.list_backups, database_cluster_uuid=cluster).get("backups") or []
    return backups_verdict(newest_backup_age_h(listed, now), len(listed), do.cluster_backup_max_age_h)


def decode_ca(payload: dict[str, Any]) -> bytes:
    """The PEM certificate in GET /v2/databases/{id}/ca's base64 `ca.certificate` (pure); refuses anything that is
    not one parsable X.509 certificate."""
    from cryptography import x509  # noqa: PLC0415 - only here

    try:
        pem = base64.b64decode(str((payload.get("ca") or {}).get("certificate", "")), validate=True)
        x509.load_pem_x509_certificate(pem)
    except Exception as exc:  # noqa: BLE001 - what it was does not matter: it is not a certificate
        raise OpsError(f"the cluster's CA from DigitalOcean is not a PEM certificate ({type(exc).__name__})") from None
    return pem


def fetch_ca(api: Api, do: DigitalOceanConfig) -> bytes:
    cluster = find_cluster_id(api, do)
    return decode_ca(api.call(f"read the CA of cluster {do.database_cluster}", "database:read",
                              api.client.databases.get_ca, database_cluster_uuid=cluster))


def write_ca(pem: bytes, path: Path) -> bool:
    """Write the CA where sslrootcert points (atomically, 0644: a public certificate); False when unchanged."""
    path = path.expanduser()
    if path.is_file() and path.read_bytes() == pem:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o644)
    tmp.replace(path)
    return True


def local_address(host: str, port: int) -> str | None:
    """The local address this machine would use towards host:port (a UDP connect sends no packet)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return None


def worker_addresses(cfg: StackConfig) -> list[str]:
    configured = cfg.digitalocean.worker_addresses
    if configured:
        return list(configured)
    found = local_address(cfg.database.host, cfg.database.port)
    return [found] if found else []


def droplet_addresses(droplet: dict[str, Any]) -> list[str]:
    """Every IPv4/IPv6 address of a droplet object (pure)."""
    nets = droplet.get("networks") or {}
    return [str(n["ip_address"]) for kind in ("v4", "v6") for n in nets.get(kind) or [] if n.get("ip_address")]


def trusted_by(rules: list[dict[str, Any]], addresses: list[str],
               resolved: dict[str, list[str]]) -> tuple[bool | None, str]:
    """Is one of `addresses` allowed by the cluster's trusted-source rules (pure)? `resolved` maps "droplet:<id>"
    and "tag:<name>" to their addresses. (None, why) when no rules are set: the cluster then accepts any address."""
    if not rules:
        return None, "no trusted sources set: the cluster accepts connections from any address"
    ips = [ipaddress.ip_address(a) for a in addresses]
    for rule in rules:
        kind, value = str(rule.get("type")), str(rule.get("value"))
        if kind == "ip_addr":
            try:
                net = ipaddress.ip_network(value, strict=False)
            except ValueError:
                continue
            hit = [str(ip) for ip in ips if ip.version == net.version and ip in net]
        else:
            hit = [a for a in addresses if a in resolved.get(f"{kind}:{value}", [])]
        if hit:
            return True, f"{hit[0]} is allowed by the {kind} rule {value}"
    listed = ", ".join(f"{r.get('type')} {r.get('value')}" for r in rules)
    return False, (f"{', '.join(addresses) or 'this worker'} is not among the cluster's trusted sources ({listed}): "
                   "connections from here time out; add it in Databases → cluster → Network Access (or set "
                   "digitalocean.worker_addresses if the cluster sees another address)")


def check_trusted(api: Api, cfg: StackConfig, cluster: str) -> tuple[bool | None, str]:
    """The cluster's firewall rules against this worker's addresses; droplet and tag rules are resolved to the
    addresses of their droplets."""
    rules = api.call(f"read the trusted sources of cluster {cfg.digitalocean.database_cluster}", "database:read",
                     api.client.databases.list_firewall_rules, database_cluster_uuid=cluster).get("rules") or []
    resolved: dict[str, list[str]] = {}
    for rule in rules:
        kind, value = str(rule.get("type")), str(rule.get("value"))
        if kind == "droplet" and value.isdigit():
            droplet = api.call(f"read droplet {value}", "droplet:read", api.client.droplets.get, droplet_id=int(value))
            resolved[f"droplet:{value}"] = droplet_addresses(droplet.get("droplet") or {})
        elif kind == "tag":
            found = api.call(f"list droplets tagged {value}", "droplet:read", api.client.droplets.list, tag_name=value)
            resolved[f"tag:{value}"] = [a for d in found.get("droplets") or [] for a in droplet_addresses(d)]
    addresses = worker_addresses(cfg)
    if not addresses:
        return False, "could not tell this worker's address: set digitalocean.worker_addresses"
    return trusted_by(rules, addresses, resolved)


@dataclass(frozen=True)
class ClusterFacts:
    """What check-config and the health sweep show about the cluster, each part independent."""

    backups: tuple[str, str]  # (status ok/fail, value)
    ca: tuple[str, str]
    trusted: tuple[str, str]


def cluster_facts(cfg: StackConfig, now: datetime, api: Api | None = None) -> ClusterFacts:
    """Backups' age, the CA against database.sslrootcert and the trusted sources; an API error fails only its part
    (a missing cluster or a refused token fails all three the same way)."""
    api = api or Api(cfg.digitalocean)
    do = cfg.digitalocean
    try:
        cluster = find_cluster_id(api, do)
    except OpsError as exc:
        failed = ("fail", str(exc))
        return ClusterFacts(failed, failed, failed)

    def part(fn: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        try:
            return fn()
        except OpsError as exc:
            return "fail", str(exc)

    def backups() -> tuple[str, str]:
        return cluster_backups(api, do, cluster, now)

    def ca() -> tuple[str, str]:
        pem = decode_ca(api.call(f"read the CA of cluster {do.database_cluster}", "database:read",
                                 api.client.databases.get_ca, database_cluster_uuid=cluster))
        path = cfg.database.sslrootcert
        if path is None:
            return "warn", "available; database.sslrootcert is not set (`stack-ops fetch-ca` writes it)"
        if not path.is_file():
            return "fail", f"{path} missing: `stack-ops fetch-ca` writes the cluster's CA there"
        if path.read_bytes().strip() != pem.strip():
            return "fail", f"{path} is not the cluster's CA: `stack-ops fetch-ca` replaces it"
        return "ok", f"{path} is the cluster's CA"

    def trusted() -> tuple[str, str]:
        allowed, why = check_trusted(api, cfg, cluster)
        return ("fail" if allowed is False else "ok"), why

    return ClusterFacts(part(backups), part(ca), part(trusted))


def cluster_backups_check(cfg: StackConfig, now: float, timeout: float = 20.0) -> Any:
    """The health sweep's `do.cluster.backups`: the age of the cluster's newest own backup, as a CheckResult for the
    alert machinery (fails when none is listed, when it is older than cluster_backup_max_age_h, or on an API
    error)."""
    from odoo_stack_ops.health.checks import CheckResult  # noqa: PLC0415 - health imports config; avoid a cycle

    do = cfg.digitalocean
    start = time.monotonic()
    threshold = f"newest within {do.cluster_backup_max_age_h:g} h"
    try:
        api = Api(do, timeout)
        status, value = cluster_backups(api, do, find_cluster_id(api, do), datetime.fromtimestamp(now, UTC))
    except OpsError as exc:
        status, value = "fail", str(exc)
    took = round(time.monotonic() - start, 4)
    if status == "ok":
        return CheckResult("do.cluster.backups", "ok", value, threshold, f"cluster {do.database_cluster}", took)
    return CheckResult("do.cluster.backups", "fail", value[:120], threshold, redact(value), took)  # type: ignore[arg-type]


def trusted_sources_hint(cfg: StackConfig, timeout: float = 20.0) -> str:
    """One line for a connect timeout: whether the cluster's trusted sources let this worker in (never raises)."""
    try:
        api = Api(cfg.digitalocean, timeout)
        allowed, why = check_trusted(api, cfg, find_cluster_id(api, cfg.digitalocean))
    except OpsError as exc:
        return f"could not read the cluster's trusted sources: {exc}"
    return why if allowed is not False else f"likely cause: {why}"
