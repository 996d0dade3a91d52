"""DigitalOcean through pydo against the API stand-in (TLS on loopback, DigitalOcean's documented paths, bodies
and errors): droplet snapshots (success, a slow action, an errored one, a timeout, a read-only token, a wrong
token, rate limiting, and that only this project's snapshots are ever deleted), the managed cluster's own
backups, its CA (fetched, then used for verify-full against the real TLS PostgreSQL) and trusted sources; and one
module-upgrade run with snapshot_before."""

from __future__ import annotations

import copy
import logging
import socket
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from odoo_stack_ops import digitalocean as do
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import AccessDenied, ConnectError, OpsError
from odoo_stack_ops.sandbox.do_api import DigitalOceanStandIn

DROPLET = 3164494
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def api_server(tmp_path):
    server = DigitalOceanStandIn(tmp_path / "do")
    yield server
    server.stop()


def stack(server: DigitalOceanStandIn, token: str | None = None, **do_over) -> object:
    """A stack reaching only the stand-in (no host is touched by these calls)."""
    return validate_tree({
        "name": "sandbox", "database": {"host": "127.0.0.1", "port": 5432, "sslmode": "require"},
        "spaces": {"bucket": "b"}, "docker": {"mode": "local", "base_url": "unix:///nowhere.sock"},
        "digitalocean": {"token": token or server.token, "api_endpoint": server.endpoint,
                         "ca_bundle": str(server.ca_file), "snapshot_before": True, "keep_snapshots": 2,
                         "snapshot_poll_s": 0.02, **do_over}})


def seed(server: DigitalOceanStandIn) -> dict[str, dict]:
    """Ours (three, older than any new one) and others' that look alike but are not ours."""
    ours = {f"ours{i}": server.seed_snapshot(f"odoo-stack-ops-sandbox-2026110{i}T020000Z-module-upgrade-odoo-core",
                                             NOW - timedelta(days=10 - i)) for i in (1, 2, 3)}
    foreign = {
        "manual": server.seed_snapshot("odoo-erp-prod-before-migration", NOW - timedelta(days=90)),
        "other_stack": server.seed_snapshot("odoo-stack-ops-sandbox-2-20261101T020000Z-x", NOW - timedelta(days=30)),
        "prefix_only": server.seed_snapshot("odoo-stack-ops-sandbox-keep-me", NOW - timedelta(days=40)),
        "other_droplet": server.seed_snapshot("odoo-stack-ops-sandbox-20261101T020000Z-x", NOW - timedelta(days=50),
                                              resource_id=999),
        "volume": server.seed_snapshot("odoo-stack-ops-sandbox-20261101T020000Z-y", NOW - timedelta(days=60),
                                       resource_type="volume"),
    }
    return {**ours, **foreign}


def names(server: DigitalOceanStandIn) -> set[str]:
    return {s["name"] for s in server.snapshots}


# --- pure ---------------------------------------------------------------------------------------------------------

def test_only_names_of_our_exact_shape_on_our_droplet_are_ours():
    name = do.snapshot_name("sandbox", NOW, "Module upgrade: odoo_core!")
    assert name == "odoo-stack-ops-sandbox-20261201T020000Z-module-upgrade-odoo-core"
    snap = {"name": name, "resource_id": str(DROPLET), "resource_type": "droplet"}
    assert do.is_ours(snap, "sandbox", DROPLET)
    assert not do.is_ours({**snap, "resource_id": "999"}, "sandbox", DROPLET)
    assert not do.is_ours({**snap, "resource_type": "volume"}, "sandbox", DROPLET)
    assert not do.is_ours(snap, "sand", DROPLET) and not do.is_ours({**snap, "name": name + " "}, "sandbox", DROPLET)
    assert not do.is_ours({**snap, "name": "odoo-stack-ops-sandbox-keep-me"}, "sandbox", DROPLET)
    older = [{**snap, "name": do.snapshot_name("sandbox", NOW - timedelta(days=d), "x"),
              "created_at": (NOW - timedelta(days=d)).isoformat()} for d in (3, 1, 2)]
    plan = do.prune_plan([*older, {"name": "theirs", "resource_id": str(DROPLET), "created_at": "2000"}],
                         "sandbox", DROPLET, keep=1)
    assert [p["created_at"][:10] for p in plan] == ["2026-11-29", "2026-11-28"]  # the newest is kept


def test_backup_age_and_trusted_source_rules_pure():
    backups = [{"created_at": "2026-11-30T20:00:00Z"}, {"created_at": "2026-11-29T20:00:00Z"}]
    assert do.newest_backup_age_h(backups, NOW) == 6.0
    assert do.backups_verdict(6.0, 2, 26) == ("ok", "newest 6.0 h old (2 kept)")
    assert do.backups_verdict(30.0, 2, 26)[0] == "fail"
    assert do.backups_verdict(None, 0, 26) == ("fail", "no backup listed")
    assert do.trusted_by([], ["10.0.0.5"], {})[0] is None
    cidr = [{"type": "ip_addr", "value": "10.0.0.0/24"}]
    assert do.trusted_by(cidr, ["10.0.0.5"], {})[0] is True
    allowed, why = do.trusted_by(cidr, ["10.0.1.5"], {})
    assert allowed is False and "10.0.1.5 is not among the cluster's trusted sources (ip_addr 10.0.0.0/24)" in why
    droplet = [{"type": "droplet", "value": "42"}]
    assert do.trusted_by(droplet, ["192.0.2.1"], {"droplet:42": ["192.0.2.1"]})[0] is True
    assert do.trusted_by(droplet, ["192.0.2.9"], {"droplet:42": ["192.0.2.1"]})[0] is False
    assert do.retry_after_s({"Retry-After": "7"}) == 7 and do.retry_after_s({"Retry-After": "3600"}) == 60
    assert do.retry_after_s({}) == 1


# --- snapshots through pydo ------------------------------------------------------------------------------------------

def test_snapshot_completes_and_only_our_older_snapshots_are_deleted(api_server):
    seeded = seed(api_server)
    made = do.take_snapshot(stack(api_server), "module-upgrade-odoo_core")
    assert made.name.startswith("odoo-stack-ops-sandbox-") and made.name.endswith("-module-upgrade-odoo-core")
    post = [c for c in api_server.calls if c[0] == "POST"]
    assert post == [("POST", f"/v2/droplets/{DROPLET}/actions")]
    assert [a["type"] for a in api_server.actions.values()] == ["snapshot"]
    # keep 2: the new one and ours3; ours1 and ours2 go; every look-alike of someone else's stays
    assert sorted(made.deleted) == sorted([seeded["ours1"]["name"], seeded["ours2"]["name"]])
    deletes = {path for method, path in api_server.calls if method == "DELETE"}
    assert deletes == {f"/v2/snapshots/{seeded[k]['id']}" for k in ("ours1", "ours2")}
    kept = names(api_server)
    assert made.name in kept and seeded["ours3"]["name"] in kept
    assert {seeded[k]["name"] for k in ("manual", "other_stack", "prefix_only", "other_droplet", "volume")} <= kept
    again = do.take_snapshot(stack(api_server, keep_snapshots=5), "second")  # under the limit: nothing deleted
    assert again.deleted == [] and {made.name, again.name} <= names(api_server)


def test_slow_action_logs_progress_then_completes(api_server, caplog):
    api_server.action_polls = 15
    with caplog.at_level(logging.INFO, logger="odoo_stack_ops.digitalocean"):
        made = do.take_snapshot(stack(api_server), "slow")
    progress = [r.getMessage() for r in caplog.records if "s so far" in r.getMessage()]
    assert progress and all("in-progress" in line for line in progress)
    assert any("completed after" in r.getMessage() for r in caplog.records)
    assert sum(1 for m, p in api_server.calls if p.startswith("/v2/actions/")) == 16 and made.name in names(api_server)


def test_errored_action_fails_and_deletes_nothing(api_server):
    seed(api_server)
    before = names(api_server)
    api_server.action_outcome = "errored"
    with pytest.raises(OpsError, match=r"action \d+ errored"):
        do.take_snapshot(stack(api_server, snapshot_timeout_s=5), "bad")
    assert names(api_server) == before and not any(m == "DELETE" for m, _ in api_server.calls)


def test_action_past_the_timeout_fails(api_server):
    api_server.action_polls = 10_000
    with pytest.raises(OpsError, match=r"still in-progress after 0.2 s \(digitalocean.snapshot_timeout_s\)"):
        do.take_snapshot(stack(api_server, snapshot_timeout_s=0.2), "hung")


def test_read_only_token_fails_before_anything_changes_with_the_scope_to_add(api_server):
    seed(api_server)
    before = names(api_server)
    with pytest.raises(AccessDenied) as err:
        do.take_snapshot(stack(api_server, token=api_server.read_token), "no-scope")
    text = str(err.value)
    assert "HTTP 403" in text and "add the scope droplet:update" in text
    assert "You do not have access for the attempted action" in text
    assert names(api_server) == before and api_server.actions == {}
    assert [m for m, _ in api_server.calls] == ["GET", "POST"]  # the droplet lookup, the refused request: no retry


def test_wrong_token_is_permanent_and_said_so(api_server):
    with pytest.raises(AccessDenied, match=r"HTTP 401.*wrong, expired or revoked; not retried"):
        do.take_snapshot(stack(api_server, token="dop_v1_" + "0" * 64), "x")
    assert len(api_server.calls) == 1


def test_rate_limit_waits_retry_after_then_goes_on_and_is_bounded(api_server):
    waits: list[float] = []
    api = do.Api(stack(api_server).digitalocean, sleep=waits.append)
    api_server.rate_limit(2, retry_after=7)
    assert do.find_droplet_id(api, stack(api_server).digitalocean) == DROPLET
    assert waits == [7.0, 7.0] and api.rate_limited == 2
    waits.clear()
    api_server.rate_limit(100, retry_after=3600)
    with pytest.raises(ConnectError, match=r"kept rate-limiting .* after 5 tries"):
        do.droplet_snapshots(api)
    assert waits == [60.0] * 4  # Retry-After honoured up to the bound, a bounded number of times
    api_server.rate_limit(0)


# --- the managed cluster -----------------------------------------------------------------------------------------

def test_cluster_backups_age_in_the_health_check(api_server):
    from odoo_stack_ops.health.checks import Probe
    from tasks.health import SweepOptions, plan_probes

    cfg = stack(api_server)
    now = datetime.now(UTC)
    ok = do.cluster_backups_check(cfg, now.timestamp(), 10)
    assert (ok.name, ok.status) == ("do.cluster.backups", "ok") and ok.value == "newest 6.0 h old (2 kept)"
    api_server.backups = [{"created_at": (now - timedelta(hours=50)).strftime("%Y-%m-%dT%H:%M:%SZ")}]
    stale = do.cluster_backups_check(cfg, now.timestamp(), 10)
    assert stale.status == "fail" and stale.value == "newest 50.0 h old (1 kept)" and stale.threshold == "newest within 26 h"
    api_server.backups = []
    assert do.cluster_backups_check(cfg, now.timestamp(), 10).value == "no backup listed"
    missing = do.cluster_backups_check(stack(api_server, database_cluster="nope"), now.timestamp(), 10)
    assert missing.status == "fail" and "no database cluster named nope" in missing.evidence
    probes = plan_probes(cfg, None, {}, now.timestamp(), SweepOptions())  # type: ignore[arg-type]
    assert [p.name for p in probes if isinstance(p, Probe) and p.name.startswith("do")] == ["do", "do.cluster"]


def test_ca_is_fetched_and_verifies_the_real_server(api_server, pg_tls, tmp_path):
    from odoo_stack_ops.cli import main

    api_server.ca_pem = pg_tls.ca_file.read_bytes()
    tree = copy.deepcopy(stack(api_server).model_dump(mode="json"))
    tree["digitalocean"]["token"] = api_server.token
    tree["database"] = {**tree["database"], "host": pg_tls.host, "port": pg_tls.port, "sslmode": "verify-full",
                        "sslrootcert": str(tmp_path / "pg" / "cluster-ca.crt")}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["--stack-file", str(path), "fetch-ca"]) == 0
    fetched = tmp_path / "pg" / "cluster-ca.crt"
    assert fetched.read_bytes() == pg_tls.ca_file.read_bytes()
    info = pg_tls.conninfo("postgres") | {"sslmode": "verify-full", "sslrootcert": str(fetched)}
    with psycopg.connect(**info) as conn:
        assert conn.pgconn.ssl_in_use
    cfg = validate_tree(tree)
    assert do.cluster_facts(cfg, NOW).ca == ("ok", f"{fetched} is the cluster's CA")
    api_server.ca_pem = api_server.ca_file.read_bytes()  # the cluster's CA changed: the file no longer matches
    assert do.cluster_facts(cfg, NOW).ca[0] == "fail"
    api_server.ca_pem = b"not a certificate"
    with pytest.raises(OpsError, match="not a PEM certificate"):
        do.fetch_ca(do.Api(cfg.digitalocean), cfg.digitalocean)


def test_trusted_sources_yes_and_no_in_check_config_and_the_timeout_hint(api_server):
    from odoo_stack_ops.probe import cluster_rows

    cfg = stack(api_server)  # database.host 127.0.0.1: the worker reaches it from 127.0.0.1
    rows = {r.component: r for r in cluster_rows(cfg)}
    assert set(rows) == {"do-backups", "do-ca", "do-trusted"}
    assert rows["do-trusted"].ok and "accepts connections from any address" in rows["do-trusted"].detail
    api_server.firewall_rules = [{"uuid": "r1", "type": "ip_addr", "value": "203.0.113.0/24"},
                                 {"uuid": "r2", "type": "tag", "value": "web"}]
    denied = {r.component: r for r in cluster_rows(cfg)}["do-trusted"]
    assert denied.ok is False and "127.0.0.1 is not among the cluster's trusted sources" in denied.detail
    assert do.trusted_sources_hint(cfg).startswith("likely cause: 127.0.0.1 is not among")
    from tasks.health import database_runbook

    with socket.socket() as s:  # a port nobody listens on: the TCP step fails as a firewalled cluster's would
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    section = database_runbook.fn(stack(api_server, database_cluster_id=api_server.cluster["id"])
                                  .model_copy(update={"database": cfg.database.model_copy(update={"port": closed})}), 2)
    assert section.verdict == "problem" and "likely cause: 127.0.0.1 is not among" in section.summary
    api_server.firewall_rules.append({"uuid": "r3", "type": "droplet", "value": str(DROPLET)})  # 127.0.0.1 is its IP
    allowed = {r.component: r for r in cluster_rows(cfg)}["do-trusted"]
    assert allowed.ok and f"allowed by the droplet rule {DROPLET}" in allowed.detail
    nat = stack(api_server, worker_addresses=["198.51.100.4"])
    assert {r.component: r for r in cluster_rows(nat)}["do-trusted"].ok is False


# --- module-upgrade with snapshot_before ----------------------------------------------------------------------------

def test_module_upgrade_takes_a_snapshot_first(prefect_harness, stack_tree, addons, pg_tls, tmp_path, api_server):
    from flows.module_upgrade import UpgradeRequest, module_upgrade

    tree = copy.deepcopy(stack_tree)
    tree["digitalocean"] = {"token": api_server.token, "api_endpoint": api_server.endpoint,
                            "ca_bundle": str(api_server.ca_file), "snapshot_before": True, "snapshot_poll_s": 0.02}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        out = module_upgrade(UpgradeRequest(install=["ipai_new"]), stack_file=str(path))
    finally:
        pg_tls.execute("DELETE FROM ir_module_module WHERE name = 'ipai_new'", "odoo_core")
    assert out["result"] == "upgraded"
    snap = out["droplet_snapshot"]
    assert snap["name"].startswith(f"odoo-stack-ops-{tree['name']}-") and snap["name"] in names(api_server)
    assert list(out).index("droplet_snapshot") < list(out).index("rollback_point")  # taken before the stop
