"""An exception carrying a secret value is masked in the Failed state Prefect records (task and flow runs, as
read back from the API) and in the traceback logged for it, as log lines are."""

from __future__ import annotations

import logging

import pytest

from odoo_stack_ops import redact

SECRET = "state-secret-Vq93-zz71"


class LibraryError(Exception):
    """Stands in for a third-party exception that quotes a connection string."""


def _states_and_logs(flow_run_id) -> tuple[list[str], list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        messages = [run.state.message or ""] + [t.state.message or "" for t in tasks if t.state]
        history = client.read_flow_run_states(flow_run_id)
        messages += [s.message or "" for s in history]
        logs = [log.message for log in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
    return messages, logs


@pytest.fixture
def secret():
    import tasks.common  # noqa: F401 - what every flow imports; installs the state masking

    redact.register(SECRET)
    return SECRET


def test_task_failure_state_message_and_traceback_are_masked(prefect_harness, secret):
    from prefect import flow, task

    from tasks.common import NO_RETRIES

    @task(name="leaky-task", **NO_RETRIES)
    def leaky() -> None:
        try:
            raise LibraryError(f"could not connect to postgresql://u:{secret}@db:25060/odoo")
        except LibraryError as exc:
            raise RuntimeError(f"dump failed with password {secret}") from exc

    @flow(name="leaky-flow")
    def run() -> None:
        leaky()

    state = run(return_state=True)
    assert state.is_failed()
    assert secret not in (state.message or "") and redact.MASK in state.message
    messages, logs = _states_and_logs(state.state_details.flow_run_id)
    assert any("dump failed with password ***" in m for m in messages), messages
    assert not [m for m in messages if secret in m], messages
    tracebacks = [line for line in logs if "Traceback" in line]
    assert tracebacks and all(secret not in line for line in logs), logs
    assert any("postgresql://u:***@db" in line for line in tracebacks)  # the chained cause is masked too


def test_flow_body_failure_state_message_is_masked(prefect_harness, secret):
    from prefect import flow

    @flow(name="leaky-flow-body")
    def run() -> None:
        raise ValueError(f"bad token {secret}")

    state = run(return_state=True)
    messages, logs = _states_and_logs(state.state_details.flow_run_id)
    assert state.is_failed() and any("bad token ***" in m for m in messages), messages
    assert not [m for m in messages + logs if secret in m]
    with pytest.raises(ValueError, match=r"bad token \*\*\*"):
        state.result()  # the exception a caller gets back is the masked one


def test_traceback_of_a_logged_exception_is_masked(secret, caplog):
    try:
        raise LibraryError(f"token={secret}")
    except LibraryError:
        with caplog.at_level(logging.ERROR):
            logging.getLogger("odoo_stack_ops.test").exception("shipping failed")
    assert secret not in caplog.text and "token=***" in caplog.text


def test_state_builders_are_wrapped():
    import prefect.flow_engine
    import prefect.task_engine

    from tasks.common import STATE_BUILDERS

    for module in (prefect.task_engine, prefect.flow_engine):
        for name in STATE_BUILDERS[module.__name__]:
            assert getattr(getattr(module, name), "_masks_secrets", False), name


def test_state_builder_masks_without_any_logging(secret):
    """The Failed state is masked even when nothing logged the exception first (the record factory would
    otherwise have masked it in passing)."""
    import prefect.task_engine

    exc = RuntimeError(f"pg_restore: password {secret} rejected")
    state = prefect.task_engine.exception_to_failed_state_sync(exc, message="Task run encountered an exception")
    assert secret not in state.message and "password *** rejected" in state.message
    assert secret not in str(exc)
