"""Many stacks: the inventory (file, folder, single stack file), each stack's own environment variables, the
per-stack deployments with spread backup windows, the locks (two stacks never share one, one stack's writers
always do), and an inventory of 3 sandbox stacks deployed and backed up through a real Prefect server."""

from __future__ import annotations

import time

import psycopg
import pytest
import yaml

from deployments import stacks
from odoo_stack_ops import inventory
from odoo_stack_ops.config import load_config
from odoo_stack_ops.errors import ConfigError, OpsError

BASE = {"database": {"host": "127.0.0.1", "sslrootcert": "/etc/ssl/do-ca.crt"}, "spaces": {"bucket": "b"},
        "docker": {"mode": "local", "base_url": "unix:///run/none.sock"}}


def write(path, doc) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_inventory_file_folder_and_single_stack_file(tmp_path):
    write(tmp_path / "prod.yaml", {"spaces": {"prefix": "prod"}})
    inv = write(tmp_path / "inventory.yaml", {"defaults": BASE, "stacks": {
        "prod": "prod.yaml", "staging": {"spaces": {"prefix": "staging"}, "backup": {"timezone": "UTC"}}}})
    prod, staging = load_config(inv, stack="prod", env={}), load_config(inv, stack="staging", env={})
    assert (prod.name, prod.spaces.prefix, prod.spaces.bucket) == ("prod", "prod", "b")  # defaults merged under
    assert (staging.name, staging.spaces.prefix, staging.backup.timezone) == ("staging", "staging", "UTC")
    with pytest.raises(ConfigError, match=r"lists 2 stacks \(prod, staging\): pass the stack's name"):
        load_config(inv, env={})
    with pytest.raises(ConfigError, match="no stack 'nope'"):
        load_config(inv, stack="nope", env={})
    folder = tmp_path / "stacks"
    folder.mkdir()
    for name in ("alpha", "beta"):
        write(folder / f"{name}.yaml", BASE)
    assert sorted(inventory.read(folder).stacks) == ["alpha", "beta"]
    assert load_config(folder, stack="beta", env={}).name == "beta"
    single = write(tmp_path / "stack.yaml", {**BASE, "name": "solo"})
    assert inventory.read(single).single and load_config(single, env={}).name == "solo"
    write(tmp_path / "bad.yaml", {"stacks": {"Prod_1": BASE}})
    with pytest.raises(ConfigError, match="lowercase letters, digits and dashes"):
        inventory.read(tmp_path / "bad.yaml")
    write(tmp_path / "clash.yaml", {"stacks": {"prod": {**BASE, "name": "other"}}})
    with pytest.raises(ConfigError, match="says name: 'other'"):
        inventory.read(tmp_path / "clash.yaml")


def test_each_stack_takes_only_its_own_environment_variables(tmp_path):
    inv = write(tmp_path / "inventory.yaml", {"defaults": BASE, "stacks": {"prod-sg": {}, "staging": {}}})
    env = {"PROD_SG__DB_PASSWORD": "prod-secret", "DB_PASSWORD": "plain-secret", "STAGING__DB_USER": "stager"}
    prod, staging = load_config(inv, stack="prod-sg", env=env), load_config(inv, stack="staging", env=env)
    assert prod.database.password.get_secret_value() == "prod-secret"
    assert staging.database.password is None and staging.database.user == "stager"  # the plain one reaches none
    single = write(tmp_path / "stack.yaml", BASE)
    assert load_config(single, env=env).database.password.get_secret_value() == "plain-secret"


def test_per_stack_deployments_spread_the_backup_window():
    doc = {"name": "odoo-stack-ops", "definitions": {"x": 1}, "deployments": [
        {"name": "nightly", "entrypoint": stacks.NIGHTLY_ENTRYPOINT, "parameters": {},
         "schedules": [{"cron": "0 2 * * *", "timezone": "Asia/Singapore"}], "tags": ["backup"]},
        {"name": "every-minute", "entrypoint": "flows/health.py:health_sweep", "schedules": [{"interval": 60}]}]}
    from odoo_stack_ops.config import validate_tree

    cfgs = {name: validate_tree({**BASE, "name": name, "backup": {"timezone": "Europe/Paris", "window_minutes": 90}})
            for name in (f"s{i:02d}" for i in range(20))}
    out = stacks.per_stack(doc, cfgs)
    assert "definitions" not in out and len(out["deployments"]) == 40
    nightly = {d["parameters"]["stack"]: d for d in out["deployments"] if d["entrypoint"] == stacks.NIGHTLY_ENTRYPOINT}
    assert set(nightly) == set(cfgs) and nightly["s03"]["name"] == "nightly-s03" and "stack:s03" in nightly["s03"]["tags"]
    starts = {}
    for name, d in nightly.items():
        minute, hour = map(int, d["schedules"][0]["cron"].split()[:2])
        assert d["schedules"][0]["timezone"] == "Europe/Paris"
        starts[name] = hour * 60 + minute - 120
        assert starts[name] == stacks.offset_minutes(name, 90) and 0 <= starts[name] < 90  # stable, in the window
    assert len(set(starts.values())) >= 15  # twenty stacks do not start at the same minute
    assert stacks.spread_cron("50 23 * * *", 15) == "5 0 * * *" and stacks.spread_cron("0 2 * * 1", 5) == "5 2 * * 1"
    assert stacks.cluster_limits(cfgs) == {"db-dumps-127-0-0-1-25060": 2}


@pytest.mark.parametrize("cron", ["50 23 * * *", "50 23 * * 1-5", "50 23 * * 5-7", "50 23 * * 0,6", "0 2 * * 1",
                                  "0 2 1 * *", "30 23 * * 3"])
def test_a_spread_nightly_fires_exactly_its_offset_later_across_midnight_too(cron):
    """Every fire time over two months moves by the offset and no more, its days too when it crosses midnight
    (read with the cron library Prefect's server schedules with)."""
    from datetime import datetime, timedelta

    from prefect._vendor.croniter import croniter

    for minutes in (5, 15, 40):
        spread = stacks.spread_cron(cron, minutes)
        assert spread != cron
        start = datetime(2026, 11, 30, 12, 0)
        base, moved = croniter(cron, start), croniter(spread, start)
        expected = [base.get_next(datetime) + timedelta(minutes=minutes) for _ in range(60)]
        assert [moved.get_next(datetime) for _ in range(60)] == expected, (cron, spread)


def test_a_nightly_that_cannot_be_spread_is_named_by_setup():
    from odoo_stack_ops.config import validate_tree

    for cron in ("50 23 1 * *", "50 23 * * MON", "*/30 2 * * *", "50 23 * 6 *", "50 23 * * 5-1"):
        assert stacks.spread_cron(cron, 15) == cron
    names = [n for n in (f"s{i:02d}" for i in range(20)) if stacks.offset_minutes(n, 60) >= 10]
    cfgs = {n: validate_tree({**BASE, "name": n, "backup": {"schedule_cron": "50 23 1 * *"}}) for n in names}
    cfgs["ok"] = validate_tree({**BASE, "name": "ok"})
    assert names and stacks.unspread(cfgs) == sorted(names)


@pytest.mark.integration
def test_two_stacks_never_share_a_writer_lock_one_stacks_writers_always_do(prefect_harness, stack_tree, tmp_path):
    from odoo_stack_ops.locks import stack_writer

    defaults = {k: v for k, v in stack_tree.items() if k != "name"}
    inv = write(tmp_path / "inventory.yaml", {"defaults": defaults, "stacks": {"lock-a": {}, "lock-b": {}}})
    a, b = (load_config(inv, stack=s, env={}) for s in ("lock-a", "lock-b"))
    with stack_writer(a, 5, "writer 1 of a"):
        started = time.monotonic()
        with stack_writer(b, 0, "writer 1 of b"):  # no wait at all: a different lock
            assert time.monotonic() - started < 5
        with pytest.raises(OpsError, match="another writer of stack lock-a is running"), \
                stack_writer(a, 1, "writer 2 of a"):
            pass


@pytest.mark.integration
def test_a_prefect_server_gone_while_a_writer_holds_its_slots_does_not_cut_the_writer(stack_tree, tmp_path):
    """The Prefect server restarting (or its database stalling) while a dump or restore holds its writer and dump
    slots: the lease renewals fail, and the writer must go on to the end of its work (Prefect's default under
    strict=True cancelled it at an arbitrary instruction, 45 s in), then give the slots back as best it can."""
    import subprocess
    import sys

    from odoo_stack_ops.locks import LEASE_S
    from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect

    stack_file = write(tmp_path / "stack.yaml", stack_tree)
    code = ("import time\nfrom odoo_stack_ops.config import load_config\n"
            "from odoo_stack_ops.locks import cluster_dump_slot, stack_writer\n"
            f"cfg = load_config({str(stack_file)!r})\n"
            "with stack_writer(cfg, 5, 'a long dump'), cluster_dump_slot(cfg):\n"
            "    print('held', flush=True)\n"
            f"    time.sleep({LEASE_S * 0.75 + 15:.0f})  # past the first renewal and its retries\n"
            "    print('finished', flush=True)\n")
    prefect = LocalPrefect(tmp_path / "prefect")
    prefect.start(timeout=240)
    errors = (tmp_path / "writer.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE, stderr=errors, text=True,
                            env=prefect.env({"PREFECT_CLIENT_MAX_RETRIES": "0"}))
    try:
        assert proc.stdout.readline().strip() == "held", (tmp_path / "writer.log").read_text()[-3000:]
        prefect.stop()  # the server goes away while the slots are held
        out, _ = proc.communicate(timeout=LEASE_S * 3)
    finally:
        proc.kill()
        prefect.stop()
    log = (tmp_path / "writer.log").read_text()
    assert "lease renewal failed" in log, log[-3000:]  # the renewals did fail while the work went on
    assert out.strip() == "finished" and proc.returncode == 0, log[-3000:]
    assert "could not give back the slot" in log


@pytest.mark.integration
def test_an_inventory_of_three_sandbox_stacks_deployed_and_backed_up_through_the_pool(pg_tls, stack_tree, s3, bucket,
                                                                                       mattermost, tmp_path):
    from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect
    from odoo_stack_ops.sandbox import odoo_data

    names = ("fleet-a", "fleet-b", "fleet-c")
    for name in names:
        db = name.replace("-", "_")
        pg_tls.createdb(db)
        with psycopg.connect(**pg_tls.conninfo(db)) as conn:
            odoo_data.populate(conn, partners=20, extra_tables=3)
    defaults = {k: v for k, v in stack_tree.items() if k != "name"}
    password = defaults["database"].pop("password")
    entries = {n: {"database": {"name": n.replace("-", "_"), "databases": [n.replace("-", "_")]},
                   "backup": {"databases": [n.replace("-", "_")], "window_minutes": 30}, "spaces": {"prefix": n},
                   "state_dir": str(tmp_path / n)} for n in names}
    inv = write(tmp_path / "inventory.yaml", {"defaults": defaults, "stacks": entries})
    env = {"STACK_OPS_FILE": inv, "MATTERMOST_WEBHOOK_URL": mattermost.url,
           **{inventory.env_prefix(n) + "DB_PASSWORD": password for n in names}}  # each stack's own secret
    prefect = LocalPrefect(tmp_path / "prefect", server_env=pg_tls.prefect_server_env("prefect_fleet"))
    try:
        prefect.start()
        assert pg_tls.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'",
                              "prefect_fleet") == [(1,)]  # the server keeps its state in PostgreSQL
        setup = prefect.python("-m", "deployments.setup", extra_env=env)
        assert "3 stacks (fleet-a, fleet-b, fleet-c)" in setup and "fleet-b-db-password" in setup
        prefect.cli("--no-prompt", "deploy", "--all", "--prefect-file", stacks.GENERATED, extra_env=env)
        base = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
        fleet = [d for d in base if d["entrypoint"] in stacks.FLEET_ENTRYPOINTS]
        listed = prefect.http.post(f"{prefect.api}/deployments/filter", json={}, timeout=10).json()
        assert len(fleet) == 2 and len(listed) == 3 * (len(base) - 2) + 2  # the fleet runs once, over all stacks
        for name in names:
            d = prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly-{name}", timeout=10).json()
            assert d["parameters"] == {"stack": name}
            minute, hour = map(int, d["schedules"][0]["schedule"]["cron"].split()[:2])
            assert hour * 60 + minute - 120 == stacks.offset_minutes(name, 30)
        limit = prefect.http.get(f"{prefect.api}/v2/concurrency_limits/"
                             f"db-dumps-{pg_tls.host.replace('.', '-')}-{pg_tls.port}", timeout=10).json()
        assert limit["limit"] == 2
        prefect.start_worker("ops-process", env)
        ids = [prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly-{n}", timeout=10).json()["id"] for n in names]
        ids.append(prefect.http.get(f"{prefect.api}/deployments/name/backup/fleet", timeout=10).json()["id"])
        runs = [prefect.http.post(f"{prefect.api}/deployments/{i}/create_flow_run", json={}, timeout=10).json()["id"]
                for i in ids]  # each stack's nightly, and the three again as subflows of one fleet run
        deadline = time.monotonic() + 600
        states = {}
        while time.monotonic() < deadline:
            states = {r: prefect.http.get(f"{prefect.api}/flow_runs/{r}", timeout=10).json()["state"]["type"] for r in runs}
            if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
                break
            time.sleep(2)
        assert set(states.values()) == {"COMPLETED"}, states
        children = prefect.http.post(f"{prefect.api}/flow_runs/filter", json={"flow_runs": {
            "parent_flow_run_id": {"operator": "and_", "any_": [runs[-1]]}}}, timeout=10).json()
        assert sorted(c["parameters"]["stack"] for c in children) == list(names)
        keys = {a["key"] for a in prefect.http.post(f"{prefect.api}/artifacts/filter", json={}, timeout=10).json()}
        assert {f"backup-nightly-{n}" for n in names} <= keys  # each stack's own artifact
    finally:
        prefect.stop()
        with psycopg.connect(**pg_tls.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS prefect_fleet WITH (FORCE)")
            for name in names:  # other tests judge every database of the shared cluster
                conn.execute(f"DROP DATABASE IF EXISTS {name.replace('-', '_')} WITH (FORCE)")
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{name}/").get("Contents", [])]
        assert any(k.startswith(f"{name}/manifests/{name.replace('-', '_')}/") for k in keys), (name, keys[:5])
