"""log-shipping on the test bed: real containers write logs, rows land in real PostgreSQL line for line,
through COPY and through a PostgREST stand-in; restarts lose and double nothing; critical lines to Mattermost."""

from __future__ import annotations

import time

import psycopg
import pytest
import yaml

from odoo_stack_ops.config import ContainerSpec
from odoo_stack_ops.sandbox.postgrest import PostgrestStandIn

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


@pytest.fixture(scope="session")
def logs_db(pg):
    pg.createdb("supabase_logs")
    return pg.conninfo("supabase_logs")


@pytest.fixture
def log_project(docker_client, sandbox_image, unique):
    project = f"logs{unique}"
    made = {}
    for service, script in (("odoo-core", ODOO_SCRIPT), ("nginx-proxy", NGINX_SCRIPT)):
        made[service] = docker_client.containers.run(
            sandbox_image, ["sh", "-c", script], detach=True, init=True, name=f"{project}-{service}-1",
            labels={"com.docker.compose.service": service, "com.docker.compose.project": project}, network_mode="host")
    time.sleep(1.5)
    yield project, made
    for c in made.values():
        c.remove(force=True)


def tree_for(stack_tree, project, logs_db, unique, tmp_path, **supabase):
    dsn = (f"postgresql://{logs_db['user']}:{logs_db['password']}@{logs_db['host']}:{logs_db['port']}/"
           f"{logs_db['dbname']}?sslmode=disable")
    return {**stack_tree, "name": f"host-{unique}",
            "docker": {**stack_tree["docker"], "compose_project": project},
            "containers": {s: ContainerSpec(service=s, image="x").model_dump() for s in ("odoo-core", "nginx-proxy")},
            "supabase": {"db_dsn": dsn, "sink": "postgres", **supabase}, "state_dir": str(tmp_path / "state")}


def write(tree, tmp_path):
    p = tmp_path / "stack.yaml"
    p.write_text(yaml.safe_dump(tree))
    return str(p)


def rows(logs_db, host):
    with psycopg.connect(**logs_db) as conn:
        return conn.execute("SELECT container, stream, level, logger, message FROM ops.logs WHERE host = %s "
                            "ORDER BY ts, message", (host,)).fetchall()


def test_rows_match_container_logs_line_for_line_and_restarts_add_only_new(
        prefect_harness, stack_tree, log_project, logs_db, unique, mattermost, tmp_path):
    from flows.log_shipping import log_shipping

    project, containers = log_project
    tree = tree_for(stack_tree, project, logs_db, unique, tmp_path)
    path = write(tree, tmp_path)
    mattermost.clear()
    first = log_shipping(stack_file=path, settle_s=0)
    got = rows(logs_db, tree["name"])
    odoo = [r for r in got if r[0].endswith("odoo-core-1")]
    nginx = [r for r in got if r[0].endswith("nginx-proxy-1")]
    # podman's API stamps log lines to the second (Docker: nanoseconds), so compare as sets, not in order
    assert sorted((r[2], r[3]) for r in odoo) == sorted([("INFO", "odoo.modules.loading"), ("INFO", "odoo.service.server"),
                                                        ("ERROR", "odoo.http"), ("CRITICAL", "odoo.service.server")])
    (error,) = [r for r in odoo if r[2] == "ERROR"]
    assert error[4].endswith("ValueError: boom") and error[4].count("\n") == 3
    assert sorted((r[1], r[2], r[3]) for r in nginx) == [("stderr", "ERROR", "nginx.error"),
                                                        ("stdout", "ERROR", "nginx.access"),
                                                        ("stdout", "INFO", "nginx.access")]
    assert first["rows"] == 7 and first["lines"] == 10
    titles = [a["title"] for m in mattermost.messages for a in m["attachments"]]
    assert sorted(titles) == sorted([f"1 critical log line(s) in {project}-odoo-core-1 / odoo.http",
                                     f"1 critical log line(s) in {project}-odoo-core-1 / odoo.service.server",
                                     f"1 critical log line(s) in {project}-nginx-proxy-1 / nginx.access",
                                     f"1 critical log line(s) in {project}-nginx-proxy-1 / nginx.error"])

    assert log_shipping(stack_file=path, settle_s=0)["rows"] == 0  # nothing doubled
    assert len(rows(logs_db, tree["name"])) == 7

    containers["odoo-core"].exec_run(["sh", "-c", "echo 'late line one' >> /proc/1/fd/1"])
    containers["odoo-core"].restart(timeout=1)  # the script runs again: 4 more entries
    time.sleep(1.5)
    mattermost.clear()
    third = log_shipping(stack_file=path, settle_s=0)
    after = rows(logs_db, tree["name"])
    assert third["rows"] == 5 and len(after) == 12
    assert sum(1 for r in after if r[4] == "late line one") == 1
    assert mattermost.messages == []  # the same groups again within the interval: held back


def test_rest_sink_through_postgrest_protocol(prefect_harness, stack_tree, log_project, logs_db, unique, tmp_path):
    from flows.log_shipping import log_shipping
    from odoo_stack_ops.errors import OpsError

    project, _ = log_project
    from odoo_stack_ops.logs.sinks import migration_sql

    with psycopg.connect(**logs_db, autocommit=True) as conn:
        conn.execute(migration_sql())
    key = "service-role-" + unique * 3
    rest = PostgrestStandIn(logs_db, key)
    try:
        tree = tree_for(stack_tree, project, logs_db, unique, tmp_path, url=rest.url, service_role_key=key)
        tree["supabase"]["sink"] = "rest"
        path = write(tree, tmp_path)
        rest.fail_next = 1  # one 503: the task retries
        out = log_shipping(stack_file=path, settle_s=0)
        assert out["rows"] == 7 and len(rows(logs_db, tree["name"])) == 7
        assert log_shipping(stack_file=path, settle_s=0)["rows"] == 0
        posts = [r for r in rest.requests if r[0] == "POST"]
        assert (503 in [c for _, _, c in posts]) and all(c in (201, 503) for _, _, c in posts)
        # the protocol itself: a duplicate without ignore-duplicates is a 409, a wrong key a 401
        import requests

        row = {"id": "00000000-0000-0000-0000-000000000001", "ts": "2026-11-25T00:00:00Z", "host": "x",
               "container": "c", "stream": "stdout", "message": "m", "attributes": {}}
        h = {"apikey": key, "Authorization": f"Bearer {key}", "Content-Profile": "ops", "Prefer": "return=minimal"}
        assert requests.post(f"{rest.url}/rest/v1/logs", json=[row], headers=h, timeout=5).status_code == 201
        dup = requests.post(f"{rest.url}/rest/v1/logs", json=[row], headers=h, timeout=5)
        assert dup.status_code == 409 and dup.json()["code"] == "23505"
        wrong = tree_for(stack_tree, project, logs_db, unique, tmp_path, url=rest.url, service_role_key="nope-key")
        wrong["supabase"]["sink"] = "rest"
        with pytest.raises(OpsError, match="401"):
            log_shipping.fn(stack_file=write(wrong, tmp_path), settle_s=0)
    finally:
        rest.stop()
