"""One run over every stack of an inventory (`backup/fleet`, `health-sweep/fleet`): each stack's flow is a subflow
run of its own (its artifacts, its alerts), at most `max_parallel` at once, in one process: one flow-run start for
the whole inventory instead of one per stack (bench/fleet.py measures the difference)."""

from __future__ import annotations

import os
from typing import Any

from prefect import Flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from odoo_stack_ops import inventory
from odoo_stack_ops.config import STACK_FILE_VAR
from odoo_stack_ops.errors import ConfigError, OpsError
from odoo_stack_ops.notify import ALERTED
from tasks.common import NO_RETRIES, logger


@task(name="fleet-stack", **NO_RETRIES)  # the stack's flow retries its own tasks; a failed stack is named below
def stack_run(one: Flow, params: dict[str, Any]) -> Any:
    """One stack's flow, as a subflow run of its own (its artifacts, its alerts)."""
    return one(**params)


def over_stacks(one: Flow, params: dict[str, Any], stack_file: str | None, stacks: list[str] | None,
                max_parallel: int, what: str, rerun: str) -> dict[str, Any]:
    """`one(params | stack=name)` for every stack of the inventory (or of `stacks`); {stack: its result}. One stack
    failing does not stop the others; the run fails at the end naming every failed stack (`rerun`: how to run one
    again, with <stack>)."""
    log = logger()
    source = stack_file or os.environ.get(STACK_FILE_VAR)
    if not source:
        raise ConfigError(f"the fleet {what} reads the inventory: point {STACK_FILE_VAR} at it (or pass stack_file)")
    inv = inventory.read(source)
    with ThreadPoolTaskRunner(max_workers=max(1, max_parallel)) as runner:
        # a single stack file's stack runs unnamed, so its unprefixed environment variables apply as for one stack
        futures = {name: runner.submit(stack_run.with_options(task_run_name=f"{what}-{name}"),
                                       {"one": one, "params": {**params, "stack_file": stack_file,
                                                               "stack": None if inv.single else name}})
                   for name in inv.select(stacks)}
        outcomes = {name: future.result(raise_on_failure=False) for name, future in futures.items()}
    failed = {name: out for name, out in outcomes.items() if isinstance(out, BaseException)}
    for name, exc in failed.items():
        log.error("stack %s: %s: %s", name, type(exc).__name__, exc)
    log.info("fleet %s: %d of %d stacks done", what, len(outcomes) - len(failed), len(outcomes))
    if failed:
        # each failed stack is a run of its own that alerted (itself, or through the failure automation)
        raise OpsError(f"fleet {what} failed for {len(failed)} of {len(outcomes)} stacks: {', '.join(sorted(failed))} "
                       f"(each stack's own run says why; re-run one with `{rerun}`) " + ALERTED)
    return outcomes
