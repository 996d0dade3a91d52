"""log-shipping on the test bed: real containers (podman's Docker API, reached through SSH as on the droplet)
write logs; rows land in real PostgreSQL line for line, through binary COPY and through the PostgREST
stand-in; a partial line, a restart, a recreated container and log truncation lose and double nothing;
critical lines reach the Mattermost stand-in grouped and rate-limited."""

from __future__ import annotations

import contextlib
import uuid

import psycopg
import pytest
import requests
import yaml

from odoo_stack_ops.config import ContainerSpec
from odoo_stack_ops.errors import AccessDenied, is_transient
from odoo_stack_ops.logs.options import LogShippingOptions
from odoo_stack_ops.logs.ship import ship
from odoo_stack_ops.logs.sink_pg import PgSink, migration_sql
from odoo_stack_ops.sandbox.postgrest import PostgrestStandIn
from tests.checks import wait_until

pytestmark = pytest.mark.integration

ODOO_SCRIPT = r"""
p() { echo "$(date -u '+%Y-%m-%d %H:%M:%S'),000 1 $1 odoo_core $2: $3" >&2; }
p INFO odoo.modules.loading "loading 42 modules"
p INFO odoo.service.server "HTTP service running"
p ERROR odoo.http "Exception during request"
printf 'Traceback (most recent call last):\n  File "http.py", line 1\nValueError: boom\n' >&2
p CRITICAL odoo.service.server "Failed to initialize database"
exec sleep 100000
"""
NGINX_SCRIPT = r"""
echo '10.0.0.1 - - [25/Nov/2026:01:00:00 +0000] "GET /web HTTP/1.1" 200 512 "-" "curl"'
echo '10.0.0.2 - - [25/Nov/2026:01:00:01 +0000] "POST /jsonrpc HTTP/1.1" 502 0 "-" "curl"'
echo '2026/11/25 01:00:02 [error] 29#29: *1 connect() failed' >&2
exec sleep 100000
"""
ODOO_ROWS = [("stderr", "INFO", "odoo.modules.loading", "loading 42 modules"),
             ("stderr", "INFO", "odoo.service.server", "HTTP service running"),
             ("stderr", "ERROR", "odoo.http", 'Exception during request\nTraceback (most recent call last):\n'
                                              '  File "http.py", line 1\nValueError: boom'),
             ("stderr", "CRITICAL", "odoo.service.server", "Failed to initialize database")]
NGINX_ROWS = [("stderr", "ERROR", "nginx.error", "*1 connect() failed"),
              ("stdout", "ERROR", "nginx.access",
               '10.0.0.2 - - [25/Nov/2026:01:00:01 +0000] "POST /jsonrpc HTTP/1.1" 502 0 "-" "curl"'),
              ("stdout", "INFO", "nginx.access", '10.0.0.1 - - [25/Nov/2026:01:00:00 +0000] "GET /web HTTP/1.1" 200 512 "-" "curl"')]
NOW = LogShippingOptions(settle_s=0)


@pytest.fixture(scope="session")
def logs_db(pg):
    pg.createdb("supabase_logs")
    info = pg.conninfo("supabase_logs")
    with psycopg.connect(**info, autocommit=True) as conn:
        conn.execute(migration_sql())
    return info


def run_service(client, image, project, service, script, **kw):
    return client.containers.run(
        image, ["sh", "-c", script], detach=True, init=True, name=f"{project}-{service}-1", network_mode="host",
        labels={"com.docker.compose.service": service, "com.docker.compose.project": project}, **kw)


def wait_for(container, text, stream="stdout", timeout=20.0):
    wait_until(lambda: text.encode() in container.logs(stdout=stream == "stdout", stderr=stream == "stderr"),
               timeout, f"{text!r} in {container.name}'s log", every=0.2)


@pytest.fixture
def log_project(docker_client, sandbox_image, unique):
    project = f"logs{unique}"
    made = {"odoo-core": run_service(docker_client, sandbox_image, project, "odoo-core", ODOO_SCRIPT),
            "nginx-proxy": run_service(docker_client, sandbox_image, project, "nginx-proxy", NGINX_SCRIPT)}
    wait_for(made["odoo-core"], "Failed to initialize", "stderr")
    wait_for(made["nginx-proxy"], "connect() failed", "stderr")
    yield project, made
    for c in list(made.values()):
        with contextlib.suppress(Exception):
            c.remove(force=True)


def dsn(info):
    return (f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/{info['dbname']}"
            "?sslmode=disable")


def stack_file(stack_tree, project, logs_db, unique, tmp_path, **supabase):
    tree = {**stack_tree, "name": f"host-{unique}",
            "docker": {**stack_tree["docker"], "compose_project": project},
            "containers": {s: ContainerSpec(service=s, image="x").model_dump() for s in ("odoo-core", "nginx-proxy")},
            "supabase": {"db_dsn": dsn(logs_db), "sink": "postgres", **supabase}, "state_dir": str(tmp_path / "state")}
    path = tmp_path / f"stack-{len(list(tmp_path.glob('stack-*')))}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path), tree["name"]


def db_rows(logs_db, host, container=None):
    with psycopg.connect(**logs_db) as conn:
        return conn.execute("SELECT stream, level, logger, message FROM ops.logs WHERE host = %s AND "
                            "(%s::text IS NULL OR container = %s) ORDER BY ts, message",
                            (host, container, container)).fetchall()


def titles(mattermost):
    return sorted(a["title"] for m in mattermost.messages for a in m["attachments"])


def test_pg_sink_line_for_line_partial_lines_restart_and_recreate(
        prefect_harness, stack_tree, log_project, logs_db, unique, mattermost, tmp_path, docker_client, sandbox_image):
    from flows.log_shipping import log_shipping

    project, containers = log_project
    path, host = stack_file(stack_tree, project, logs_db, unique, tmp_path)
    odoo, nginx = f"{project}-odoo-core-1", f"{project}-nginx-proxy-1"
    mattermost.clear()
    first = log_shipping(stack_file=path, options=NOW)
    # podman stamps lines to the second, so rows within one second sort by message here
    assert sorted(db_rows(logs_db, host, odoo)) == sorted(ODOO_ROWS)
    assert sorted(db_rows(logs_db, host, nginx)) == sorted(NGINX_ROWS)
    api_lines = sum(len(c.logs(stdout=s == "stdout", stderr=s == "stderr").splitlines())
                    for c in containers.values() for s in ("stdout", "stderr"))
    assert (first["rows"], first["lines"]) == (7, api_lines) and api_lines == 10
    assert titles(mattermost) == sorted([f"1 critical log line(s) in {odoo} / odoo.http",
                                         f"1 critical log line(s) in {odoo} / odoo.service.server",
                                         f"1 critical log line(s) in {nginx} / nginx.access",
                                         f"1 critical log line(s) in {nginx} / nginx.error"])

    assert log_shipping(stack_file=path, options=NOW)["rows"] == 0  # nothing doubled

    # a line still being written is held back, then shipped whole, once
    containers["nginx-proxy"].exec_run(["sh", "-c", "printf 'half' > /proc/1/fd/1"])
    wait_for(containers["nginx-proxy"], "half")
    assert log_shipping(stack_file=path, options=NOW)["rows"] == 0
    containers["nginx-proxy"].exec_run(["sh", "-c", "echo ' done' > /proc/1/fd/1"])
    wait_for(containers["nginx-proxy"], "done")
    assert log_shipping(stack_file=path, options=NOW)["rows"] == 1
    assert [r[3] for r in db_rows(logs_db, host, nginx) if "half" in r[3]] == ["half done"]

    # a restart keeps the container and its log: only what came after the cursor is new
    containers["odoo-core"].exec_run(["sh", "-c", "echo 'late line one' > /proc/1/fd/1"])
    containers["odoo-core"].restart(timeout=1)  # the script runs again: 4 more entries
    wait_for(containers["odoo-core"], "late line one")
    wait_until(lambda: containers["odoo-core"].logs(stdout=False).count(b"Failed to initialize database") == 2, 20,
               "the restarted script's entries")
    mattermost.clear()
    third = log_shipping(stack_file=path, options=NOW)
    assert third["rows"] == 5
    after = db_rows(logs_db, host, odoo)
    assert sorted(after) == sorted([*ODOO_ROWS, *ODOO_ROWS, ("stdout", None, None, "late line one")])
    assert mattermost.messages == []  # the same groups again within the interval: held back, counted

    # a recreated container (same name, new id, fresh log) is read from its start
    old_id = containers["odoo-core"].id
    containers["odoo-core"].remove(force=True)
    containers["odoo-core"] = run_service(docker_client, sandbox_image, project, "odoo-core", ODOO_SCRIPT)
    wait_for(containers["odoo-core"], "Failed to initialize", "stderr")
    assert log_shipping(stack_file=path, options=NOW)["rows"] == 4
    assert len(db_rows(logs_db, host, odoo)) == 13
    with psycopg.connect(**logs_db) as conn:
        cursor_ids = dict(conn.execute(
            "SELECT stream, container_id FROM ops.log_cursors WHERE host = %s AND container = %s", (host, odoo)))
    # stderr moved on to the new container; stdout (only the old one's late line) waits for its first line
    assert cursor_ids == {"stderr": containers["odoo-core"].id, "stdout": old_id}


def test_a_run_killed_after_shipping_and_before_posting_leaves_its_critical_lines_to_the_next_run(
        prefect_harness, stack_tree, log_project, logs_db, unique, mattermost, tmp_path):
    """The critical lines were collected in memory and posted after the pass: a run killed (or a pass failed)
    after its batches were committed lost their alert, as the next run reads after the committed cursor."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    from flows.log_shipping import log_shipping

    project, _containers = log_project
    path, host = stack_file(stack_tree, project, logs_db, unique, tmp_path)
    odoo, nginx = f"{project}-odoo-core-1", f"{project}-nginx-proxy-1"
    mattermost.clear()
    code = ("import os\nimport flows.log_shipping as f\nfrom odoo_stack_ops.logs.options import LogShippingOptions\n"
            "f.post_critical = lambda *a, **k: os.kill(os.getpid(), 9)  # the worker dies before the post\n"
            f"f.log_shipping(stack_file={path!r}, options=LogShippingOptions(settle_s=0))")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(db_rows(logs_db, host)) == 7 and mattermost.messages == []  # shipped, cursors committed, not posted
    out = log_shipping(stack_file=path, options=NOW)
    assert out["rows"] == 0  # nothing new: the lines are not read again...
    assert titles(mattermost) == sorted([f"1 critical log line(s) in {odoo} / odoo.http",  # ...and yet posted
                                         f"1 critical log line(s) in {odoo} / odoo.service.server",
                                         f"1 critical log line(s) in {nginx} / nginx.access",
                                         f"1 critical log line(s) in {nginx} / nginx.error"])
    assert log_shipping(stack_file=path, options=NOW)["messages"] == 0  # once


def test_a_refused_logs_database_password_is_permanent_and_names_the_setting(pg, logs_db):
    with pytest.raises(AccessDenied, match="password authentication failed") as err:
        PgSink({**logs_db, "password": "not-the-password"})
    assert not is_transient(err.value) and "SUPABASE_DB_URL" in str(err.value)


def test_truncated_log_loses_nothing_docker_still_has_and_doubles_nothing(podman, docker_client, sandbox_image,
                                                                           logs_db, unique):
    """podman truncates a log at max-size (Docker rotates): the lines still in the log are shipped exactly once,
    though the cursor's second lost its first lines (so the ranks shifted)."""
    project = f"rot{unique}"
    c = run_service(docker_client, sandbox_image, project, "worker",
                    'i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo "a $i"; done; exec sleep 100000',
                    log_config={"type": "k8s-file", "config": {"max-size": "40000"}})
    host = f"rot-{unique}"
    sink = PgSink(logs_db)
    try:
        wait_for(c, "a 300")
        assert ship({"worker": c}, host=host, sink=sink, settle_s=0).rows == 300
        c.exec_run(["sh", "-c", 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "b $i"; done > /proc/1/fd/1'])
        wait_for(c, "b 3000")
        present = c.logs(stdout=True, stderr=False).decode().splitlines()  # without stamps partial lines are whole
        assert len(present) < 3300 and "a 1" not in present  # the log really was truncated
        second = ship({"worker": c}, host=host, sink=sink, settle_s=0)
        got = [r[3] for r in db_rows(logs_db, host)]
        assert len(got) == len(set(got)) == 300 + second.rows  # nothing doubled
        assert set(got) == {f"a {i}" for i in range(1, 301)} | set(present)  # nothing Docker still has is lost
    finally:
        sink.close()
        c.remove(force=True)


def test_a_big_backlog_is_worked_through_in_time_slices(podman, docker_client, sandbox_image, logs_db, unique):
    project = f"big{unique}"
    c = run_service(docker_client, sandbox_image, project, "worker",
                    'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo "c $i"; done; exec sleep 100000')
    host = f"big-{unique}"
    sink = PgSink(logs_db)
    try:
        wait_for(c, "c 20000")
        runs = []
        while not runs or not runs[-1].finished:
            runs.append(ship({"worker": c}, host=host, sink=sink, batch_size=1000, max_seconds=0.01, settle_s=0))
            assert len(runs) < 40
        assert len(runs) >= 10 and all(r.rows <= 1000 for r in runs)  # one batch per slice: bounded work per run
        got = [r[3] for r in db_rows(logs_db, host)]
        assert len(got) == 20000 and set(got) == {f"c {i}" for i in range(1, 20001)}
    finally:
        sink.close()
        c.remove(force=True)


def test_an_engine_connection_dropped_mid_log_fails_the_pass_and_the_next_ships_exactly_once(
        podman, docker_client, sandbox_image, logs_db, unique):
    """The log is read on a thread (read-ahead, the next stream opened early): a connection the engine drops
    mid-stream is raised to the caller as the read's own error, not taken for the log's end (which would commit
    a cursor past lines never read); the next pass ships the rest, nothing doubled."""
    import docker
    from urllib3.exceptions import ProtocolError

    from tests.faults import TcpCutProxy

    c = run_service(docker_client, sandbox_image, f"cut{unique}", "worker",
                    'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo "d $i ........................................'
                    '......................................................"; done; exec sleep 100000')
    host = f"cut-{unique}"
    proxy = TcpCutProxy(unix_path=podman.socket_path)
    via_proxy = docker.DockerClient(base_url=f"tcp://127.0.0.1:{proxy.port}", timeout=60)
    sink = PgSink(logs_db)
    try:
        wait_for(c, "d 20000 ")
        container = via_proxy.containers.get(c.id)
        proxy.cut_after = proxy.sent + 1_000_000  # about halfway through the 2.5 MB log
        with pytest.raises(ProtocolError):
            ship({"worker": container}, host=host, sink=sink, batch_size=1000, settle_s=0)
        assert proxy.cuts == 1
        partial = len(db_rows(logs_db, host))
        assert partial < 20000
        assert ship({"worker": c}, host=host, sink=sink, settle_s=0).rows == 20000 - partial
        got = [r[3].split()[1] for r in db_rows(logs_db, host)]
        assert len(got) == 20000 and set(got) == {str(i) for i in range(1, 20001)}
    finally:
        via_proxy.close()
        proxy.stop()
        sink.close()
        c.remove(force=True)


def test_rest_sink_through_the_postgrest_stand_in(prefect_harness, stack_tree, log_project, logs_db, unique, tmp_path):
    from flows.log_shipping import log_shipping
    from odoo_stack_ops.errors import OpsError

    project, _ = log_project
    key = "service-role-" + unique * 3
    rest = PostgrestStandIn(logs_db, key)
    try:
        path, host = stack_file(stack_tree, project, logs_db, unique, tmp_path, url=rest.url, service_role_key=key,
                                sink="rest")
        rest.fail_next = 1  # one 503: the task retries
        out = log_shipping(stack_file=path, options=NOW)
        assert out["rows"] == 7
        assert sorted(db_rows(logs_db, host)) == sorted(ODOO_ROWS + NGINX_ROWS)
        assert log_shipping(stack_file=path, options=NOW)["rows"] == 0
        posts = [r for r in rest.requests if r[0] == "POST"]
        assert 503 in [r[2] for r in posts] and {r[2] for r in posts} == {201, 503}
        assert {r[3] for r in posts if "/logs" in r[1]} == {"return=minimal, resolution=ignore-duplicates"}
        with psycopg.connect(**logs_db) as conn:
            assert conn.execute("SELECT count(*) FROM ops.log_cursors WHERE host = %s", (host,)).fetchone()[0] == 3

        wrong, _ = stack_file(stack_tree, project, logs_db, unique, tmp_path, url=rest.url,
                              service_role_key="nope-key-0000", sink="rest")
        with pytest.raises(OpsError, match="401"):
            log_shipping.fn(stack_file=wrong, options=NOW)
    finally:
        rest.stop()


def test_postgrest_stand_in_speaks_the_insert_protocol(logs_db, unique):
    key = "k-" + unique
    rest = PostgrestStandIn(logs_db, key)
    url = f"{rest.url}/rest/v1/logs"
    h = {"apikey": key, "Authorization": f"Bearer {key}", "Content-Profile": "ops", "Prefer": "return=minimal"}
    rid = str(uuid.uuid4())
    row = {"id": rid, "ts": "2026-11-25T00:00:00Z", "host": f"p-{unique}", "container": "c", "stream": "stdout",
           "message": "m", "attributes": {"a": 1}}
    try:
        first = requests.post(url, json=[row], headers=h, params={"on_conflict": "id"}, timeout=5)
        assert (first.status_code, first.content) == (201, b"")
        dup = requests.post(url, json=[row], headers=h, params={"on_conflict": "id"}, timeout=5)
        assert dup.status_code == 409 and dup.json()["code"] == "23505"
        ignore = {**h, "Prefer": "return=minimal, resolution=ignore-duplicates"}
        ok = requests.post(url, json=[row], headers=ignore, params={"on_conflict": "id"}, timeout=5)
        assert ok.status_code == 201 and ok.headers["Preference-Applied"] == "return=minimal, resolution=ignore-duplicates"
        rep = requests.post(url, json={**row, "id": str(uuid.uuid4())}, timeout=5,
                            headers={**h, "Prefer": "return=representation"})
        assert rep.status_code == 201 and rep.json()[0]["shipped_at"] and rep.json()[0]["attributes"] == {"a": 1}
        merge = {**h, "Prefer": "return=representation, resolution=merge-duplicates"}
        merged = requests.post(url, json=[{**row, "message": "m2"}], headers=merge, params={"on_conflict": "id"},
                               timeout=5)
        assert merged.status_code == 201 and merged.json()[0]["message"] == "m2"
        assert requests.post(url, json=[row], timeout=5, headers={**h, "apikey": "x"}).status_code == 401
        assert requests.post(url, json=[row], timeout=5, headers={**h, "Authorization": "Bearer x"}).status_code == 401
        bad = requests.post(url, data=b"[{", timeout=5, headers={**h, "Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["code"] == "PGRST102"
        mixed = requests.post(url, json=[row, {"id": rid}], headers=h, timeout=5)
        assert mixed.status_code == 400 and mixed.json()["message"] == "All object keys must match"
        assert requests.post(url, json=[row], timeout=5, headers={**h, "Content-Profile": "private"}).status_code == 406
        assert requests.post(f"{rest.url}/rest/v1/nope", json=[row], headers=h, timeout=5).status_code == 404
        assert requests.post(url, data="x", timeout=5, headers={**h, "Content-Type": "text/plain"}).status_code == 415
        notnull = requests.post(url, json=[{"id": str(uuid.uuid4())}], headers=h, timeout=5)
        assert notnull.status_code == 400 and notnull.json()["code"] == "23502"
        got = requests.get(url, params={"id": f"eq.{rid}", "select": "id,message"}, timeout=5,
                           headers={"apikey": key, "Authorization": f"Bearer {key}", "Accept-Profile": "ops"})
        assert got.json() == [{"id": rid, "message": "m2"}]
    finally:
        rest.stop()


def test_hand_encoded_binary_copy_stores_what_psycopgs_write_row_stores(logs_db, unique):
    """The shipper's own binary COPY encoder against psycopg's: same rows, tricky values included."""
    from datetime import UTC, datetime, timedelta

    from psycopg import sql

    from odoo_stack_ops.logs.sink_pg import copy_encoded, copy_rows, register_row_dumpers

    base = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)  # before PostgreSQL's epoch: negative
    texts = ["", "plain", "ünïcødé ✓ 日本語", "tab\there\nnewline \\ back", "x" * 300_000, '{"json": "inside"}']
    rows = [(uuid.uuid4().bytes, base + timedelta(days=i * 400, microseconds=i), f"h-{unique}", f"c{i % 2}",
             "stderr" if i % 3 else "stdout", None if i % 4 == 0 else "ERROR", None if i % 5 == 0 else "odoo.http",
             texts[i % len(texts)], f'{{"n": {i}, "s": "é\\n"}}') for i in range(40)]
    with psycopg.connect(**logs_db) as conn:
        register_row_dumpers(conn)
        for name in ("enc_a", "enc_b"):
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE ops.logs INCLUDING DEFAULTS)").format(sql.Identifier(name)))
        kept: list = []
        copy_encoded(conn, sql.Identifier("enc_a"), rows, kept)
        copy_rows(conn, sql.Identifier("enc_b"), rows)
        cols = "id, ts, host, container, stream, level, logger, message, attributes"
        a = conn.execute(f"SELECT {cols} FROM enc_a ORDER BY id").fetchall()
        b = conn.execute(f"SELECT {cols} FROM enc_b ORDER BY id").fetchall()
    assert kept == rows and len(a) == len(rows) and a == b
    assert {r[1] for r in a} == {r[1] for r in rows} and a[0][8]["s"] == "é\n"
