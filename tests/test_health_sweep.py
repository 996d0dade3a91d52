"""health-sweep and diagnose on the test bed: a stopped container alerts once and resolves once, a disk
threshold alerts, TLS is enforced, DigitalOcean Monitoring through pydo, Mattermost gets exactly that."""

from __future__ import annotations

import pytest

from odoo_stack_ops.config import ContainerSpec, validate_tree
from odoo_stack_ops.health import checks
from odoo_stack_ops.sandbox.do_api import DigitalOceanStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def lone_service(docker_client, sandbox_image, unique):
    """A container of its own compose project, free to stop and start."""
    project = f"health{unique}"
    c = docker_client.containers.run(sandbox_image, ["sh", "-c", "sleep 100000"], detach=True, init=True,
                                     name=f"{project}-web-1", network_mode="host",
                                     labels={"com.docker.compose.service": "web",
                                             "com.docker.compose.project": project})
    yield project, c
    c.remove(force=True)


def sweep_tree(stack_tree, project, tmp_path, **over):
    tree = {**stack_tree, "docker": {**stack_tree["docker"], "compose_project": project},
            "containers": {"web": ContainerSpec(service="web", image="busybox").model_dump()},
            "state_dir": str(tmp_path / "state")}
    tree.update(over)
    return tree


def write(tree, tmp_path):
    import yaml

    p = tmp_path / "stack.yaml"
    p.write_text(yaml.safe_dump(tree))
    return str(p)


def alerts(mattermost):
    return [a["title"] for m in mattermost.messages for a in m.get("attachments", [])]


def test_stopped_container_alerts_after_n_sweeps_and_resolves_once(prefect_harness, stack_tree, lone_service,
                                                                    mattermost, tmp_path):
    from flows.health import health_sweep

    project, container = lone_service
    path = write(sweep_tree(stack_tree, project, tmp_path), tmp_path)
    mattermost.clear()
    out = health_sweep(stack_file=path, fail_after=2, ok_after=1)
    failing = [r for r in out["results"] if r["status"] == "fail"]
    assert failing == [], failing
    container.stop(timeout=1)
    first = health_sweep(stack_file=path, fail_after=2, ok_after=1)
    assert [r["status"] for r in first["results"] if r["check"] == "container.web"] == ["fail"]
    assert alerts(mattermost) == []  # one failure is not an alert yet
    health_sweep(stack_file=path, fail_after=2, ok_after=1)
    health_sweep(stack_file=path, fail_after=2, ok_after=1)  # still failing: no repeat
    assert alerts(mattermost) == ["ALERT: container.web on sandbox"]
    assert mattermost.messages[0]["attachments"][0]["color"] == "#a30200"
    container.start()
    health_sweep(stack_file=path, fail_after=2, ok_after=1)
    health_sweep(stack_file=path, fail_after=2, ok_after=1)
    assert alerts(mattermost) == ["ALERT: container.web on sandbox", "RESOLVED: container.web on sandbox"]


def test_disk_threshold_alerts(prefect_harness, stack_tree, lone_service, mattermost, tmp_path):
    from flows.health import health_sweep

    project, _ = lone_service
    tree = sweep_tree(stack_tree, project, tmp_path)
    tree["thresholds"] = {"disk_percent": 0.5}  # any real disk is fuller than that
    path = write(tree, tmp_path)
    mattermost.clear()
    out = health_sweep(stack_file=path, fail_after=1, disk_mounts=["/"])
    disk = [r for r in out["results"] if r["check"] == "host.disk:/"]
    assert disk[0]["status"] == "fail" and disk[0]["threshold"] == "> 0.5 %"
    assert alerts(mattermost) == ["ALERT: host.disk:/ on sandbox"]


def test_tls_required_passes_on_tls_and_fails_without(pg_tls, pg):
    ok = {r.name: r for r in checks.database(pg_tls.database_config(sslmode="require"))}
    assert ok["db.select1"].status == "ok" and "TLS on" in ok["db.select1"].value
    assert ok["db.connections"].value.endswith("/25")
    bad = {r.name: r for r in checks.database(pg.database_config(sslmode="require"))}
    assert bad["db.tcp"].status == "ok" and bad["db.select1"].status == "fail"
    assert "SSL" in bad["db.select1"].evidence or "ssl" in bad["db.select1"].evidence


def test_digitalocean_monitoring_through_pydo(stack_tree, tmp_path):
    do = DigitalOceanStandIn(tmp_path / "do")
    try:
        tree = {**stack_tree, "digitalocean": {"token": do.token, "api_endpoint": do.endpoint,
                                               "ca_bundle": str(do.ca_file)}}
        cfg = validate_tree(tree)
        (low,) = checks.digitalocean(cfg, 1_700_000_000)
        assert low.status == "ok" and low.value.startswith("10.0 %")
        do.cpu_busy_percent = 95
        (high,) = checks.digitalocean(cfg, 1_700_000_000)
        assert high.status == "fail"
        assert any(p.startswith("/v2/monitoring/metrics/droplet/cpu?") for p in do.requests)
        wrong = validate_tree({**tree, "digitalocean": {**tree["digitalocean"], "token": "dop_v1_wrong"}})
        (denied,) = checks.digitalocean(wrong, 1_700_000_000)
        assert denied.status == "fail" and "dop_v1_wrong" not in denied.evidence
    finally:
        do.stop()


def test_diagnose_collects_the_runbook_evidence(prefect_harness, stack_file):
    from flows.health import diagnose

    evidence = diagnose(stack_file=stack_file)
    assert "Filesystem" in evidence["df -h"] and "Mem:" in evidence["free -m"]
    assert "odoo" in evidence["odoo-core: last 100 log lines"]
    assert "db.select1: ok" in evidence["database: TCP, TLS, credentials (SELECT 1)"]
