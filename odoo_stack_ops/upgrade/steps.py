"""Module upgrade steps that touch things: lock, code, facts from the container and database, odoo itself."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import requests

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup.database import connect
from odoo_stack_ops.config import DatabaseConfig, StackConfig
from odoo_stack_ops.errors import CommandFailed, CommandTimeout, OpsError, VerificationFailed
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.upgrade.plan import addon_hash, check_modules, check_ref, parse_manifest

log = logging.getLogger(__name__)
HASH_KEY = "odoo_stack_ops.addon_hash."
ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b.*(registry|Failed|failed|Traceback|Error)")


def addons_repos(host: Executor, compose_dir: str) -> list[str]:
    """The git checkouts under compose_dir/addons (the seed mounts ./addons/ipai and ./addons/oca)."""
    return host.run(["sh", "-c", 'for d in "$1"/addons/*/; do [ -d "$d/.git" ] && echo "$d"; done; true', "sh",
                     compose_dir]).stdout_text.split()


def record_commits(host: Executor, repos: list[str]) -> dict[str, str]:
    """Each repository's current commit: what a rollback checks out again."""
    return {repo: host.run(["git", "-C", repo, "rev-parse", "--verify", "HEAD"], timeout=60).stdout_text.strip()
            for repo in repos}


def checkout_commits(host: Executor, commits: dict[str, str]) -> list[str]:
    """Check each repository out at its recorded commit again; returns 'repo@commit' lines."""
    done = []
    for repo, commit in commits.items():
        check_ref(commit)
        host.run(["git", "-C", repo, "checkout", "--quiet", "--force", "--detach", commit], timeout=600,
                 hint=f"check {repo} by hand: git -C {repo} checkout {commit}")
        done.append(f"{repo.rstrip('/')}@{commit[:12]}")
    return done


def deploy_code(host: Executor, compose_dir: str, ref: str) -> list[str]:
    """Bring every git checkout under compose_dir/addons to `ref` (fetched first when there is a remote)."""
    check_ref(ref)
    found = addons_repos(host, compose_dir)
    for repo in found:
        host.run(["sh", "-c", 'cd "$1" && { git remote | grep -q . && git fetch --quiet --all --tags || true; } '
                  '&& git checkout --quiet --detach "$2"', "sh", repo, ref], timeout=600,
                 hint=f"check that {ref} exists in {repo}")
    return found


Source = tuple[Executor, str]  # where an addons path is read: (executor, directory)


def stage_ref(host: Executor, repos: list[str], ref: str) -> tuple[str, dict[str, str]]:
    """Fetch `ref` in each addons repository and unpack its tree into a temporary directory on the droplet
    (`git archive`: the served checkout is not touched), so the plan sees the code it would deploy.
    Returns (the directory to remove afterwards, {repository name: unpacked directory})."""
    check_ref(ref)
    tmp = host.run(["mktemp", "-d"], timeout=30).stdout_text.strip()
    staged = {}
    for repo in repos:
        name = repo.rstrip("/").rsplit("/", 1)[-1]
        host.run(["sh", "-c", 'cd "$1" && { git remote | grep -q . && git fetch --quiet --all --tags || true; } && '
                  'mkdir -p "$3" && git archive --format=tar "$2" | tar -xf - -C "$3"', "sh", repo, ref,
                  f"{tmp}/{name}"], timeout=600, hint=f"check that {ref} exists in {repo}")
        staged[name] = f"{tmp}/{name}"
    return tmp, staged


def addons_sources(container: Executor, host: Executor, paths: list[str], staged: dict[str, str]) -> list[Source]:
    """Each addons path as the plan reads it: a repository being deployed from its staged tree on the droplet
    (mounted as `./addons/<name>` → `…/<name>`), every other path inside the container."""
    return [(host, staged[p.rstrip("/").rsplit("/", 1)[-1]]) if p.rstrip("/").rsplit("/", 1)[-1] in staged
            else (container, p) for p in paths]


def find_manifests(sources: list[Source], names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in check_modules(names):
        for executor, path in sources:
            r = executor.run(["cat", f"{path}/{name}/__manifest__.py"], check=False, timeout=30)
            if r.ok:
                out[name] = parse_manifest(r.stdout_text)
                break
    return out


def list_addons(sources: list[Source]) -> list[str]:
    found: set[str] = set()
    for executor, path in sources:
        r = executor.run(["sh", "-c", 'for m in "$1"/*/__manifest__.py; do [ -f "$m" ] && '
                          'basename "$(dirname "$m")"; done; true', "sh", path], timeout=60)
        found |= {n for n in r.stdout_text.split() if re.match(r"^[a-z0-9_]+$", n)}
    return sorted(found)


def addon_hashes(sources: list[Source], names: list[str]) -> dict[str, str]:
    out = {}
    for name in check_modules(names):
        for executor, path in sources:
            r = executor.run(["sh", "-c", 'cd "$1" 2>/dev/null && find . -type f ! -path "*/.git/*" -exec '
                              'sha256sum {} +', "sh", f"{path}/{name}"], check=False, timeout=120)
            if r.ok and r.stdout.strip():
                out[name] = addon_hash(r.stdout_text)
                break
    return out


def module_states(db: DatabaseConfig, database: str) -> dict[str, str]:
    with connect(db, database) as conn:
        return dict(conn.execute("SELECT name, state FROM ir_module_module").fetchall())


def stored_hashes(db: DatabaseConfig, database: str) -> dict[str, str]:
    with connect(db, database) as conn:
        rows = conn.execute("SELECT key, value FROM ir_config_parameter WHERE key LIKE %s", (HASH_KEY + "%",))
        return {k.removeprefix(HASH_KEY): v for k, v in rows.fetchall()}


def store_hashes(db: DatabaseConfig, database: str, hashes: dict[str, str]) -> None:
    with connect(db, database) as conn:
        for name, digest in hashes.items():
            conn.execute("INSERT INTO ir_config_parameter (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value", (HASH_KEY + name, digest))


def odoo_argv(cfg: StackConfig, database: str, install: list[str], upgrade: list[str]) -> list[str]:
    argv = ["odoo", "-c", cfg.odoo.config_file, "-d", database]
    if install:
        argv += ["-i", ",".join(check_modules(install))]
    if upgrade:
        argv += ["-u", ",".join(check_modules(upgrade))]
    return [*argv, "--stop-after-init", "--no-http"]


def run_odoo(container: Executor, cfg: StackConfig, database: str, install: list[str], upgrade: list[str],
             timeout_s: float, emit: Callable[[str], None]) -> list[str]:
    """Run odoo in the container, every log line to `emit`; returns error lines. Raises on exit != 0/timeout."""
    errors: list[str] = []
    argv = odoo_argv(cfg, database, install, upgrade)
    try:
        # the CA file is copied into the container so odoo's libpq can verify the server there too
        with pgtls.CAInContainer(container).stream(["sh", "-c", 'exec "$@" 2>&1', "sh", *argv],
                                                   env=cfg.database.libpq_env(database), timeout=timeout_s) as out:
            buf = b""
            for chunk in out:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace")
                    emit(line)
                    if ERROR_LINE.search(line):
                        errors.append(line)
    except CommandTimeout as exc:
        raise VerificationFailed(f"odoo did not finish within {timeout_s:.0f} s (hung upgrade)") from exc
    except CommandFailed as exc:
        raise VerificationFailed(f"odoo exited with code {exc.result.exit_code}: "
                                 + (" | ".join(errors[-3:]) or "no error line in its log")) from exc
    return errors


def check_states(db: DatabaseConfig, database: str, modules: list[str]) -> list[str]:
    states = module_states(db, database)
    return [f"{m} is {states.get(m, 'missing')}" for m in modules if states.get(m) != "installed"]


def wait_healthy(url: str, timeout_s: float) -> float:
    """Seconds until `url` answers 200; raises VerificationFailed at the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=5).status_code == 200:
                return round(time.monotonic() - start, 2)
        time.sleep(1)
    raise VerificationFailed(f"{url} did not answer 200 within {timeout_s:.0f} s")


MAINTENANCE_LABEL = "odoo-stack-ops.maintenance"


def restart_service(conns: Any, service: str) -> None:
    """Restart the container of a compose service (the seed's `docker compose restart odoo-core`)."""
    conns.docker().containers.get(conns.container(service).container.id).restart(timeout=30)


def stop_for_maintenance(conns: Any, service: str) -> tuple[str, str]:
    """Stop the service's container (users get nginx's maintenance answer) and start a stand-by container
    from the same image, volumes, environment, network and labels, idle, so that commands (pg_dump, the
    filestore, `odoo -u --stop-after-init`) still run where the service's files are. Returns (stopped id,
    stand-by id); the stand-by is found by the service's label while the real container is stopped."""
    client = conns.docker()
    real = client.containers.get(conns.container(service).container.id)
    attrs = real.attrs
    volumes = {}
    for m in attrs.get("Mounts") or []:
        source = m.get("Name") if m.get("Type") == "volume" else m.get("Source")
        volumes[source] = {"bind": m["Destination"], "mode": "rw" if m.get("RW", True) else "ro"}
    config, host_config = attrs["Config"], attrs["HostConfig"]
    labels = {**(config.get("Labels") or {}), MAINTENANCE_LABEL: real.id}
    real.stop(timeout=30)
    try:
        standby = client.containers.run(
            config["Image"], ["2147483647"], entrypoint=["sleep"], detach=True, name=f"{real.name}-maintenance",
            labels=labels, environment=config.get("Env") or [], volumes=volumes, user=config.get("User") or None,
            network_mode=host_config.get("NetworkMode") or None, init=True,
        )
    except Exception:
        real.start()
        raise
    conns.forget(service)
    log.info("%s stopped for maintenance; stand-by container %s runs its commands", real.name, standby.name)
    return real.id, standby.id


UPGRADE_MARK = "/tmp/odoo-stack-ops-upgrade.json"  # noqa: S108 - inside the stand-by container, gone with it


def _standbys(conns: Any, service: str) -> list[Any]:
    return [c for c in conns.docker().containers.list(all=True, filters={"label": [MAINTENANCE_LABEL]})
            if c.labels.get("com.docker.compose.service") == service]


def in_maintenance(conns: Any, service: str) -> bool:
    """Whether a stand-by container of `service` exists (stop_for_maintenance made it, end_maintenance not yet)."""
    return bool(_standbys(conns, service))


def mark_changing(conns: Any, service: str, mark: dict[str, Any]) -> None:
    """Write what an upgrade is about to change (database, rollback point, recorded commits) into the stand-by
    container: a run killed from here on leaves it there, and the mark goes when the stand-by does (Odoo back up,
    by success or rollback)."""
    (standby,) = _standbys(conns, service)
    code, out = standby.exec_run(["sh", "-c", 'printf %s "$1" > "$2"', "sh", json.dumps(mark), UPGRADE_MARK])
    if code != 0:
        raise OpsError(f"could not mark the upgrade in stand-by container {standby.name}: {out!r}")


def changing_marks(conns: Any, service: str) -> list[dict[str, Any]]:
    """The marks of upgrades that were changing the stack when they stopped (their stand-by still there)."""
    marks = []
    for standby in _standbys(conns, service):
        if standby.status != "running":
            standby.start()  # a droplet rebooted since: the stand-by's own file system still holds the mark
        code, out = standby.exec_run(["cat", UPGRADE_MARK])
        if code == 0:
            marks.append({**json.loads(out), "standby": standby.name})
    return marks


def end_maintenance(conns: Any, service: str) -> list[str]:
    """Remove the stand-by container(s) of `service` (also one a crashed run left) and start the real one."""
    client = conns.docker()
    done = []
    for standby in _standbys(conns, service):
        real_id = standby.labels[MAINTENANCE_LABEL]
        standby.remove(force=True)
        client.containers.get(real_id).start()
        done.append(real_id)
    conns.forget(service)
    return done


def reset_module_states(db: DatabaseConfig, database: str) -> int:
    """The seed's runbook: modules stuck mid-way are put back (to install → uninstalled, to upgrade → installed)."""
    with connect(db, database) as conn:
        a = conn.execute("UPDATE ir_module_module SET state = 'uninstalled' WHERE state = 'to install'").rowcount
        b = conn.execute("UPDATE ir_module_module SET state = 'installed' WHERE state IN ('to upgrade', 'to remove')"
                         ).rowcount
        return a + b

