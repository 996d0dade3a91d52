"""The fleet backup (`backup/fleet`): every stack of an inventory as a subflow of one run, at most `max_parallel`
at once; a stack that fails fails the run at the end, named, while the others complete and publish."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from deployments import stacks
from odoo_stack_ops import inventory
from odoo_stack_ops.errors import ConfigError, OpsError
from odoo_stack_ops.notify import ALERTED

BASE = {"database": {"host": "127.0.0.1", "sslrootcert": "/etc/ssl/do-ca.crt"}, "spaces": {"bucket": "b"},
        "docker": {"mode": "local", "base_url": "unix:///run/none.sock"}}


def test_a_fleet_run_covers_the_asked_stacks_or_all_of_them(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"defaults": BASE, "stacks": {"prod": {}, "staging": {}, "acme": {}}}))
    inv = inventory.read(path)
    assert inv.select(None) == ["acme", "prod", "staging"] and inv.select([]) == ["acme", "prod", "staging"]
    assert inv.select(["staging", "prod", "staging"]) == ["prod", "staging"]
    with pytest.raises(ConfigError, match=r"no stack 'nope' in .*it lists: acme, prod, staging"):
        inv.select(["prod", "nope"])


def test_the_fleet_deployment_is_generated_once_not_per_stack():
    from odoo_stack_ops.config import validate_tree

    fleet = {"name": "fleet", "entrypoint": stacks.FLEET_ENTRYPOINTS[0], "parameters": {}, "tags": ["backup"]}
    doc = {"deployments": [{"name": "nightly", "entrypoint": stacks.NIGHTLY_ENTRYPOINT, "parameters": {}}, fleet]}
    cfgs = {name: validate_tree({**BASE, "name": name}) for name in ("a", "b", "c")}
    out = stacks.per_stack(doc, cfgs)["deployments"]
    assert [d["name"] for d in out] == ["fleet", "nightly-a", "nightly-b", "nightly-c"]
    assert out[0] == fleet  # every stack of the inventory: no stack parameter, no stack tag
    deployed = yaml.safe_load((Path(__file__).parent.parent / "prefect.yaml").read_text())["deployments"]
    assert any(d["entrypoint"] == stacks.FLEET_ENTRYPOINTS[0] and d["name"] == "fleet" for d in deployed)


def _overlap(runs: list) -> int:
    """The most runs that were Running at the same moment."""
    edges = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.mark.integration
def test_a_failing_stack_fails_the_fleet_run_by_name_while_the_others_complete(prefect_harness, pg_tls, stack_tree,
                                                                               s3, bucket, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    from flows.backup import backup_fleet
    from odoo_stack_ops.sandbox import odoo_data

    good = ("fleet-x", "fleet-y", "fleet-z")
    for name in good:
        pg_tls.createdb(name.replace("-", "_"))
        with psycopg.connect(**pg_tls.conninfo(name.replace("-", "_"))) as conn:
            odoo_data.populate(conn, partners=20, extra_tables=3)
    defaults = {k: v for k, v in stack_tree.items() if k != "name"}
    password = defaults["database"].pop("password")
    entries = {n: {"database": {"name": n.replace("-", "_"), "databases": [n.replace("-", "_")]},
                   "backup": {"databases": [n.replace("-", "_")]}, "spaces": {"prefix": n},
                   "state_dir": str(tmp_path / n)} for n in (*good, "fleet-gone")}  # fleet_gone was never created
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump({"defaults": defaults, "stacks": entries}))
    env = {inventory.env_prefix(n) + "DB_PASSWORD": password for n in entries}
    started = datetime.now().astimezone()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            with pytest.raises(OpsError, match=r"fleet backup failed for 1 of 4 stacks: fleet-gone \(") as failed:
                backup_fleet(stack_file=str(inv), max_parallel=2)
        # one post per failed stack, its run's own (the failure automation skips runs that say they posted); the
        # fleet run's failure is never posted as well
        assert str(failed.value).endswith(ALERTED)
        for name in good:  # the others were backed up and published
            keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{name}/manifests/")
                    .get("Contents", [])]
            assert len(keys) == 1, (name, keys)
        assert not s3.client().list_objects_v2(Bucket=bucket, Prefix="fleet-gone/manifests/").get("Contents")
        with get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=started))) if (r.parameters or {}).get("stack") in entries]
        states = {r.parameters["stack"]: r.state.type.value for r in runs}
        assert states == {"fleet-x": "COMPLETED", "fleet-y": "COMPLETED", "fleet-z": "COMPLETED",
                          "fleet-gone": "FAILED"}, states
        assert all(r.parent_task_run_id for r in runs)  # subflows of the one fleet run, not runs of their own
        assert next(r for r in runs if r.parameters["stack"] == "fleet-gone").state.message.endswith(ALERTED)
        print("RUNS", sorted((r.start_time.isoformat()[11:23], r.end_time.isoformat()[11:23], r.parameters["stack"]) for r in runs))
        assert _overlap(runs) <= 2  # max_parallel
    finally:
        with psycopg.connect(**pg_tls.conninfo("postgres"), autocommit=True) as conn:
            for name in good:  # other tests judge every database of the shared cluster
                conn.execute(f"DROP DATABASE IF EXISTS {name.replace('-', '_')} WITH (FORCE)")


@pytest.mark.integration
def test_a_fleet_sweep_runs_each_stacks_sweep_as_its_own_named_run_and_names_a_broken_stack(prefect_harness, stack_tree,
                                                                                          tmp_path):
    """`health-sweep/fleet`: one run a minute for the whole inventory; each stack's alerts, table and subflow run
    name it; a stack whose sweep cannot run fails the fleet run by name (marked: its own run was posted)."""
    import copy

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    from flows.health import health_fleet
    from odoo_stack_ops.sandbox.mattermost import MattermostStandIn

    mm = MattermostStandIn()  # this test's alone: exactly these posts
    tree = copy.deepcopy(stack_tree)
    password = tree["database"].pop("password")
    tree.pop("name")
    tree |= {"containers": {}, "mattermost": {"webhook_url": mm.url},
             "backup": {**tree.get("backup", {}), "databases": []}}  # the database and host checks only
    good = ("hs-a", "hs-b")
    entries = {n: {"state_dir": str(tmp_path / n)} for n in good}
    entries["hs-broken"] = {"state_dir": str(tmp_path / "hs-broken"), "database": {"port": "five-four-three-two"}}
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump({"defaults": tree, "stacks": entries}))
    started = datetime.now().astimezone()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in good:
                mp.setenv(inventory.env_prefix(name) + "DB_PASSWORD", password)
            with pytest.raises(OpsError, match=r"fleet health-sweep failed for 1 of 3 stacks: hs-broken \(") as failed:
                health_fleet(stack_file=str(inv), fail_after=1, disk_paths=["/no/such/dir"], container_stats=False)
    finally:
        mm.stop()
    assert str(failed.value).endswith(ALERTED)
    titles = sorted(a["title"] for m in mm.messages for a in m["attachments"])
    assert titles == [f"ALERT: host.disk:/no/such/dir on {n}" for n in good], titles
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=started))) if (r.parameters or {}).get("stack") in entries]
        keys = {a.key for a in client.read_latest_artifacts()}
    states = {r.parameters["stack"]: r.state.type.value for r in runs}
    assert states == {"hs-a": "COMPLETED", "hs-b": "COMPLETED", "hs-broken": "FAILED"}, states
    assert all(r.parent_task_run_id for r in runs)  # subflows of the one fleet run
    # the same name every minute for a stack: the failure automation posts a failing one once an hour
    assert {r.parameters["stack"]: r.name for r in runs} == {n: f"health-sweep-{n}" for n in entries}
    with get_client(sync_client=True) as client:
        fleet_run = client.read_task_run(runs[0].parent_task_run_id).flow_run_id
        assert client.read_flow_run(fleet_run).name == "health-sweep-fleet"
    assert {"health-sweep-hs-a", "health-sweep-hs-b"} <= keys


@pytest.mark.integration
def test_the_frequent_flows_name_their_runs_after_the_stack_even_when_they_cannot_start(prefect_harness, tmp_path):
    """Log shipping and the health sweep run every few minutes: their runs are named `<flow>-<stack>` (the flow's
    name for a single stack file) before anything can fail, so a failing schedule is posted once an hour
    (deployments/setup.py)."""
    from prefect.client.orchestration import get_client

    from flows.health import health_sweep
    from flows.log_shipping import log_shipping

    missing = str(tmp_path / "missing.yaml")
    states = {"log-shipping-prod": log_shipping(stack_file=missing, stack="prod", return_state=True),
              "health-sweep-prod": health_sweep(stack_file=missing, stack="prod", return_state=True),
              "health-sweep": health_sweep(stack_file=missing, return_state=True)}
    with get_client(sync_client=True) as client:
        for name, state in states.items():
            assert state.is_failed() and "does not exist" in state.message
            assert client.read_flow_run(state.state_details.flow_run_id).name == name
