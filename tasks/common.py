"""What every task shares: retry policy for transient errors only, the run logger, artifacts and Failed state
messages without secrets."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from odoo_stack_ops.errors import is_transient
from odoo_stack_ops.redact import mask_exception, redact
from odoo_stack_ops.signals import keep_cancels


def retry_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only network drops, 5xx and the like; a wrong password or a failed check fails at once."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return is_transient(exc)
    return False


# Keyword arguments for @task: backoff 2, 4, 8 s with ±50 % jitter; never cache (inputs hold live config).
TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_transient,
    "cache_policy": NO_CACHE,
}
NO_RETRIES: dict[str, Any] = {"cache_policy": NO_CACHE}


def stack_run_name(flow_name: str) -> Callable[[], str]:
    """`flow_run_name` for a flow that runs every few minutes: `<flow>-<stack>` (the flow's name for a single stack
    file), the same for every run of it, so that the failure automation posts a schedule that keeps failing once
    an hour, not every run (deployments/setup.py), and the run list says which stack."""
    def name() -> str:
        stack = flow_run.parameters.get("stack")
        return f"{flow_name}-{stack}" if stack else flow_name
    return name


def _masking_state(make: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one of Prefect's exception → Failed/Crashed state builders: the exception is masked in place first
    (so the stored result and later tracebacks are clean), then the state's message."""
    if getattr(make, "_masks_secrets", False):
        return make

    def clean(exc: BaseException | None) -> None:
        mask_exception(exc if exc is not None else sys.exc_info()[1])

    if inspect.iscoroutinefunction(make):
        async def masked_async(exc: BaseException | None = None, *args: Any, **kwargs: Any) -> Any:
            clean(exc)
            state = await make(exc, *args, **kwargs)
            state.message = redact(state.message) if state.message else state.message
            return state

        masked_async._masks_secrets = True  # type: ignore[attr-defined]
        return masked_async

    def masked(exc: BaseException | None = None, *args: Any, **kwargs: Any) -> Any:
        clean(exc)
        state = make(exc, *args, **kwargs)
        state.message = redact(state.message) if state.message else state.message
        return state

    masked._masks_secrets = True  # type: ignore[attr-defined]
    return masked


STATE_BUILDERS = {
    "prefect.task_engine": ("exception_to_failed_state_sync", "exception_to_failed_state",
                            "exception_to_crashed_state_sync", "exception_to_crashed_state"),
    "prefect.flow_engine": ("exception_to_failed_state", "exception_to_crashed_state"),
}


def mask_failed_states() -> None:
    """Prefect writes an exception's text into the Failed state message it records (and shows in the UI) without
    passing through logging: mask it there as log lines are. Every task and flow module imports this module,
    so it is in place in each flow-run process. Raises when a Prefect upgrade moved the builders (tested)."""
    for module_name, names in STATE_BUILDERS.items():
        module = importlib.import_module(module_name)
        for name in names:
            setattr(module, name, _masking_state(getattr(module, name)))


mask_failed_states()
keep_cancels()


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, a module logger outside (direct calls, tests)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("odoo_stack_ops")


def stack_key(key: str) -> str:
    """Artifact keys name the stack when the run was given one (an inventory's stack): the UI's latest
    `backup-nightly-prod` is never another stack's night. One stack keeps the plain key."""
    from prefect.runtime import flow_run  # noqa: PLC0415

    stack = (flow_run.parameters or {}).get("stack")
    return f"{key}-{stack}" if stack else key


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact, redacted; outside a run it is only logged."""
    try:
        create_markdown_artifact(key=stack_key(key), markdown=redact(markdown), description=redact(description))
    except MissingContextError:
        logger().info("%s", redact(markdown))


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    clean = [{k: redact(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    try:
        create_table_artifact(key=stack_key(key), table=clean, description=redact(description))
    except MissingContextError:
        logger().info("%s: %s", description, clean)
