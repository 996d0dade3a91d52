"""Database and log-sink TLS against the real TLS-only cluster: verify-full with the cluster's own CA connects, a
CA that does not vouch for the server is refused with what to fetch, no CA is a configuration error, and
`require` still works but warns once in every flow run."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup.database import connect
from odoo_stack_ops.config import DatabaseConfig, SupabaseConfig, validate_tree
from odoo_stack_ops.errors import ConfigError, is_transient
from odoo_stack_ops.logs.sink_pg import PgSink
from odoo_stack_ops.sandbox.tls import make_ca_and_cert

WHAT_TO_FETCH = ("Download CA certificate", "doctl databases get-ca", "sslrootcert")


@pytest.fixture(params=["another cluster's CA", "odoo-stack-ops test CA"])
def other_ca(tmp_path, request):
    """A CA that did not sign the cluster's certificate: another cluster's, or one with the same name (OpenSSL
    then fails on the signature rather than on a missing issuer)."""
    ca, _, _ = make_ca_and_cert(tmp_path / "other", ca_common_name=request.param)
    return ca


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "sslmode=" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture
def tls_warnings(monkeypatch):
    """Warnings of the TLS policy (outside a run they go to its module logger), a fresh once-per-run memory."""
    monkeypatch.setattr(pgtls, "_warned", set())
    seen = _Seen()
    pgtls.log.addHandler(seen)
    yield seen.messages
    pgtls.log.removeHandler(seen)


def test_verify_full_is_the_default_and_needs_the_ca():
    with pytest.raises(ValidationError) as err:
        DatabaseConfig(host="db.example.com")
    text = str(err.value)
    assert all(s in text for s in WHAT_TO_FETCH), text
    assert DatabaseConfig(host="db.example.com", sslrootcert="/etc/ca.crt").sslmode == "verify-full"


def test_no_ca_is_reported_by_config_validation(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_tree({"database": {"host": "h", "password": "pw-not-shown-1"}, "spaces": {"bucket": "b"},
                       "docker": {"mode": "local", "base_url": "unix:///x.sock"}})
    assert "database" in str(err.value) and "doctl databases get-ca" in str(err.value)
    assert "pw-not-shown-1" not in str(err.value)


def test_verify_full_with_the_clusters_ca_connects(pg_tls, tls_warnings):
    db = pg_tls.database_config("postgres")
    assert db.sslmode == "verify-full" and db.sslrootcert == pg_tls.ca_file
    with connect(db) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not tls_warnings


def test_verify_full_by_name_too(pg_tls):
    """The certificate names localhost as well as 127.0.0.1: verify-full holds for either."""
    db = pg_tls.database_config("postgres").model_copy(update={"host": "localhost"})
    with connect(db) as conn:
        assert conn.pgconn.ssl_in_use


@pytest.mark.parametrize("mode", ["verify-full", "verify-ca"])
def test_wrong_ca_is_refused_with_what_to_fetch(pg_tls, other_ca, mode):
    db = pg_tls.database_config("postgres", sslmode=mode, sslrootcert=other_ca)
    with pytest.raises(pgtls.TLSVerificationError) as err:
        connect(db)
    text = str(err.value)
    assert all(s in text for s in WHAT_TO_FETCH) and str(other_ca) in text, text
    assert not is_transient(err.value)  # retrying cannot fix a wrong CA


def test_missing_ca_file_is_refused_before_connecting(pg_tls, tmp_path):
    db = pg_tls.database_config("postgres", sslrootcert=tmp_path / "nope.crt")
    with pytest.raises(pgtls.TLSVerificationError, match="does not exist") as err:
        connect(db)
    assert "doctl databases get-ca" in str(err.value)


def test_libpq_tools_get_the_ca(pg_tls):
    env = pg_tls.database_config("odoo_core").libpq_env()
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == str(pg_tls.ca_file)


def test_require_works_and_warns_once_per_process_outside_a_run(pg_tls, tls_warnings):
    db = pg_tls.database_config("postgres", sslmode="require", sslrootcert=None)
    for _ in range(3):
        with connect(db) as conn:
            assert conn.pgconn.ssl_in_use
    (warning,) = tls_warnings
    assert "does not check the server's identity" in warning and "verify-full" in warning
    assert "DB_SSLROOTCERT" in warning


def test_require_warns_in_each_flow_runs_logs(pg_tls, prefect_harness, tls_warnings):
    """Once per run, however many connections the run opens: every run's own log shows it."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    db = pg_tls.database_config("postgres", sslmode="require", sslrootcert=None)

    @flow(name="tls-require-probe")
    def probe() -> str:
        from prefect.runtime import flow_run

        for _ in range(3):
            with connect(db) as conn:
                conn.execute("SELECT 1")
        return str(flow_run.get_id())

    runs = [probe(), probe()]
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        for run_id in runs:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            hits = [log for log in logs if "does not check the server's identity" in log.message]
            assert len(hits) == 1, (run_id, [log.message for log in logs])
            assert hits[0].level == logging.WARNING
        assert client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))


# --- the log sink --------------------------------------------------------------------------------------------------

def _dsn(pg, **query: str) -> str:
    info = pg.conninfo("postgres")
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/postgres" + \
        (f"?{tail}" if tail else "")


def test_sink_verify_full_with_the_ca_connects(pg_tls):
    sink = PgSink(_dsn(pg_tls, sslmode="verify-full", sslrootcert=str(pg_tls.ca_file)))
    try:
        assert sink.conn.pgconn.ssl_in_use
    finally:
        sink.close()


def test_sink_defaults_to_verify_full(pg_tls):
    """A URL without sslmode is verify-full (libpq alone would say `prefer`): without a CA it is refused."""
    with pytest.raises(pgtls.TLSVerificationError, match="Download certificate"):
        PgSink(_dsn(pg_tls))
    sink = PgSink(_dsn(pg_tls, sslrootcert=str(pg_tls.ca_file)))
    try:
        assert sink.conn.pgconn.ssl_in_use
    finally:
        sink.close()


def test_sink_wrong_ca_is_refused_with_what_to_fetch(pg_tls, other_ca):
    with pytest.raises(pgtls.TLSVerificationError) as err:
        PgSink(_dsn(pg_tls, sslmode="verify-full", sslrootcert=str(other_ca)))
    assert "Download certificate" in str(err.value) and str(other_ca) in str(err.value)
    assert pg_tls.password.get_secret_value() not in str(err.value)


def test_sink_require_works_and_warns(pg_tls, tls_warnings):
    sink = PgSink(_dsn(pg_tls, sslmode="require"))
    assert sink.conn.pgconn.ssl_in_use
    sink.close()
    (warning,) = tls_warnings
    assert "logs database" in warning and "SUPABASE_DB_URL" in warning


def test_sink_dsn_without_ca_is_a_config_error():
    with pytest.raises(ValidationError) as err:
        SupabaseConfig(db_dsn="postgresql://u:sink-pw-hidden@db.x.supabase.co:5432/postgres")
    assert "Download certificate" in str(err.value) and "sink-pw-hidden" not in str(err.value)
    SupabaseConfig(db_dsn="postgresql://u:p@h/postgres?sslmode=require")
    SupabaseConfig(db_dsn="postgresql://u:p@h/postgres?sslrootcert=/etc/ca.crt")

