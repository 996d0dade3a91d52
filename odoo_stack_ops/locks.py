"""One writer per stack: the nightly backup, a pre-upgrade backup, a restore over a live database and
retention all write the stack's bucket prefix or databases, and none may overlap another.

Two locks, taken in this order: a PostgreSQL advisory lock on the stack's cluster (covers a run started
outside Prefect, and ends with its holder's session, so a killed run never blocks the next) and a Prefect
global concurrency limit (visible in the UI, shared by every worker). A second writer waits up to `wait_s`,
then fails saying who holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator

from odoo_stack_ops.backup.database import connect
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.errors import OpsError

log = logging.getLogger(__name__)
LEASE_S = 60  # a killed holder's slot comes back after this long (Prefect's minimum; renewed while alive)
SLOT_WAIT_S = LEASE_S + 20  # the lease plus the server's expiry sweep (every 15 s)


def limit_name(stack: str) -> str:
    """The Prefect global concurrency limit of a stack's writers (pure)."""
    return f"stack-writes-{stack}"


def advisory_key(stack: str) -> str:
    return f"odoo-stack-ops:writer:{stack}"


def cluster_limit_name(host: str, port: int) -> str:
    """The Prefect limit of dumps on one database cluster, shared by every stack using it (pure)."""
    return "db-dumps-" + re.sub(r"[^a-z0-9-]+", "-", f"{host}-{port}".lower()).strip("-")


def ensure_limit(name: str, limit: int = 1) -> bool:
    """Create the limit when missing (a limit that does not exist silently limits nothing); True if created."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate  # noqa: PLC0415
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound  # noqa: PLC0415

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            return True


@contextlib.contextmanager
def advisory_lock(cfg: StackConfig, wait_s: float, what: str) -> Iterator[None]:
    """A session-level advisory lock in the maintenance database (a restore renames the others)."""
    db = cfg.database
    conn = connect(db, db.maintenance_db, autocommit=True)
    try:
        deadline = time.monotonic() + wait_s
        while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (advisory_key(cfg.name),)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise OpsError(f"another writer of stack {cfg.name} is running (nightly backup, module upgrade, "
                               f"restore or retention: PostgreSQL advisory lock held); {what} waited {wait_s:.0f} s. "
                               "Try again when it has finished (its run is in the Prefect UI)")
            time.sleep(1)
        yield
    finally:
        conn.close()  # closing the session releases the lock


@contextlib.contextmanager
def stack_writer(cfg: StackConfig, wait_s: float, what: str) -> Iterator[None]:
    """Hold the stack's writer lock for the block: the advisory lock first (it dies with its holder's session,
    so it says who is alive), then the Prefect limit (visible in the UI). A slot still taken once the advisory
    lock is ours belongs to a run that died before its lease ran out: it is named and the run goes on."""
    name = limit_name(cfg.name)
    ensure_limit(name)
    log.info("%s: waiting for the writer lock of stack %s (up to %.0f s)", what, cfg.name, wait_s)
    with advisory_lock(cfg, wait_s, what):
        slot = _slot(name, SLOT_WAIT_S)
        try:
            slot.__enter__()
        except TimeoutError:
            slot = None
            log.warning("the Prefect concurrency limit %s is still taken by a run that is gone (a killed worker; "
                        "its lease ends within minutes): %s goes on under the database lock. If this repeats, "
                        "reset the limit's active slots in the Prefect UI (Concurrency)", name, what)
        try:
            log.info("%s holds the writer lock of stack %s", what, cfg.name)
            yield
        finally:
            if slot is not None:
                _release(slot, name)


@contextlib.contextmanager
def cluster_dump_slot(cfg: StackConfig) -> Iterator[None]:
    """One of the cluster's `max_parallel_dumps` slots for the block (stacks sharing a cluster queue here)."""
    name = cluster_limit_name(cfg.database.host, cfg.database.port)
    ensure_limit(name, cfg.database.max_parallel_dumps)
    slot = _slot(name, cfg.backup.lock_wait_s)
    slot.__enter__()
    try:
        yield
    finally:
        _release(slot, name)


def _slot(name: str, wait_s: float) -> contextlib.AbstractContextManager[None]:
    """A slot of the Prefect limit `name`, its lease renewed while held. A renewal that fails (the Prefect server
    restarting, its database stalling) only warns: Prefect's default under strict=True cancels the holder at an
    arbitrary instruction, which would cut an hours-long dump or restore for a blip; the advisory lock still
    keeps one writer per stack."""
    from prefect.concurrency.sync import concurrency  # noqa: PLC0415

    return concurrency(name, occupy=1, timeout_seconds=wait_s, strict=True, lease_duration=LEASE_S,
                       raise_on_lease_renewal_failure=False)


def _release(slot: contextlib.AbstractContextManager[None], name: str) -> None:
    """Give the slot back; a Prefect API that cannot be reached then only warns: the work is done, and the lease
    ends by itself within LEASE_S."""
    try:
        slot.__exit__(None, None, None)
    except Exception as exc:  # noqa: BLE001 - the block succeeded; the slot comes back when its lease ends
        log.warning("could not give back the slot of the Prefect limit %s (%s: %s); it comes back by itself within "
                    "%d s", name, type(exc).__name__, exc, LEASE_S)
