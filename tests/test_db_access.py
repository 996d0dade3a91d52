"""A database that refuses our credentials or rights fails at once and says what to fix: the real TLS cluster
refuses a wrong password, an unknown role and a role without CONNECT; none of them is transient, and the
nightly's dump task makes one attempt with a wrong DB_PASSWORD, not four."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from odoo_stack_ops.backup.database import access_denied_hint, connect
from odoo_stack_ops.errors import AccessDenied, ConfigError, ConnectError, is_transient

WRONG = "wrong-pass-Ux41-not-it"


@pytest.fixture
def no_connect_role(pg_tls):
    """A role that logs in with its own password but may not connect to database `locked`."""
    role, password, db = "ops_no_connect", "no-connect-pw-7Tq2", "locked"
    pg_tls.dropdb(db)
    pg_tls.execute(f"DROP ROLE IF EXISTS {role}")
    pg_tls.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    pg_tls.createdb(db)
    pg_tls.execute(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
    yield role, password, db
    pg_tls.dropdb(db)
    pg_tls.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("update", [{"password": SecretStr(WRONG)},
                                    {"user": "ghost_role", "password": SecretStr(WRONG)}],
                         ids=["wrong password", "unknown role"])
def test_refused_credentials_are_permanent_and_say_what_to_fix(pg_tls, update):
    db = pg_tls.database_config("postgres").model_copy(update=update)
    with pytest.raises(AccessDenied) as err:
        connect(db)
    text = str(err.value)
    assert not is_transient(err.value) and not isinstance(err.value, ConnectError)
    assert "password authentication failed" in text and "Not retried" in text
    assert "DB_PASSWORD" in text and f"role {db.user} must exist" in text, text
    assert WRONG not in text


def test_a_role_without_connect_is_told_which_grant_it_needs(pg_tls, no_connect_role):
    role, password, db = no_connect_role
    cfg = pg_tls.database_config(db).model_copy(update={"user": role, "password": SecretStr(password)})
    with pytest.raises(AccessDenied) as err:
        connect(cfg)
    assert not is_transient(err.value)
    assert f"GRANT CONNECT ON DATABASE {db} TO {role}" in str(err.value), str(err.value)
    with connect(cfg, "postgres") as conn:  # the same role and password elsewhere: only the right was missing
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_other_connection_failures_stay_transient(pg_tls):
    db = pg_tls.database_config("postgres").model_copy(update={"port": 1, "connect_timeout_s": 2})
    with pytest.raises(ConnectError) as err:
        connect(db)
    assert is_transient(err.value)
    # a database whose name merely contains "role" is not a refused role
    assert access_denied_hint('FATAL:  database "payroll" does not exist', db, "payroll") is None


def test_a_database_that_does_not_exist_is_permanent_and_named(pg_tls):
    db = pg_tls.database_config("postgres")
    with pytest.raises(ConfigError, match=r"no database no_such_db.*DB_NAME") as err:
        connect(db, "no_such_db")
    assert not is_transient(err.value)


def test_dump_task_with_a_wrong_password_fails_at_the_first_attempt(prefect_harness, stack_config):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from odoo_stack_ops.backup import layout
    from tasks.backup import dump_database

    cfg = stack_config.model_copy(update={
        "database": stack_config.database.model_copy(update={"password": SecretStr(WRONG)})})

    @flow(name="dump-with-a-wrong-password")
    def night() -> None:
        from datetime import UTC, datetime

        dump_database(cfg, "odoo_core", layout.stamp(datetime.now(UTC)))

    state = night(return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        history = [s.name for s in client.read_task_run_states(run.id)]
    assert run.run_count == 1 and "AwaitingRetry" not in history and "Retrying" not in history, history
    assert run.state.is_failed() and "DB_PASSWORD" in run.state.message, run.state.message
    with pytest.raises(AccessDenied, match="password authentication failed"):
        state.result()
