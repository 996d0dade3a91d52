"""health-sweep and diagnose on the test bed: a stopped container alerts after N sweeps and resolves once, a
filled disk alerts, TLS is enforced as sslmode=require demands, DigitalOcean Monitoring through pydo against
its TLS stand-in, container health and crash loops, the runbooks' evidence; Mattermost receives exactly the
expected messages."""

from __future__ import annotations

import copy
import socket
import subprocess
import time

import pytest
import yaml
from pydantic import SecretStr

from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.health import checks
from odoo_stack_ops.sandbox.do_api import DigitalOceanStandIn
from odoo_stack_ops.sandbox.mattermost import MattermostStandIn
from odoo_stack_ops.sandbox.podman import force_remove
from tests.checks import wait_until

pytestmark = pytest.mark.integration

# What an Odoo container prints when an addon's dependencies are missing (Odoo 18's wording).
ODOO_LINES = [
    "2026-11-25 01:02:03,123 1 INFO odoo_core odoo: Odoo version 18.0",
    "2026-11-25 01:02:03,456 1 WARNING odoo_core odoo.modules.graph: module ipai_finance_ppm: Unmet dependencies: "
    "ipai_core",
    "2026-11-25 01:02:04,000 1 ERROR odoo_core odoo.modules.loading: Some modules are not loaded, some dependencies "
    "or manifest may be missing: ['ipai_enterprise_bridge']",
]


@pytest.fixture
def mm():
    """A Mattermost stand-in of this test alone, so 'exactly these messages' means exactly."""
    server = MattermostStandIn()
    yield server
    server.stop()


@pytest.fixture
def lone_web(docker_client, sandbox_image, unique):
    """A container of its own compose project (free to stop and start), logging Odoo-like lines."""
    project = f"health{unique}"
    script = "".join(f"echo '{line}';" for line in ODOO_LINES) + " exec sleep 100000"
    c = docker_client.containers.run(sandbox_image, ["sh", "-c", script], detach=True, init=True,
                                     name=f"{project}-web-1", network_mode="host",
                                     labels={"com.docker.compose.service": "web",
                                             "com.docker.compose.project": project})
    yield project, c
    c.remove(force=True)


def write_stack(stack_tree, tmp_path, *, project: str | None, containers: dict, mm: MattermostStandIn | None,
                **over) -> str:
    tree = copy.deepcopy(stack_tree)
    tree["docker"]["compose_project"] = project
    tree["containers"] = containers
    tree["mattermost"] = {"webhook_url": mm.url} if mm else {}
    tree["state_dir"] = str(tmp_path / "state")
    tree["backup"] = {**tree.get("backup", {}), "databases": []}  # no backups here: test_deadman tests their age
    tree.update(over)
    path = tmp_path / f"health-stack-{len(list(tmp_path.glob('health-stack-*')))}.yaml"  # stack_file has stack.yaml
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o600)
    return str(path)


def posts(mm: MattermostStandIn) -> list[list[tuple[str, str]]]:
    """Each webhook post as its attachments' (title, colour)."""
    return [[(a["title"], a["color"]) for a in m["attachments"]] for m in mm.messages]


def by_name(out: dict) -> dict[str, dict]:
    return {r["check"]: r for r in out["results"]}


def test_stopped_container_alerts_after_n_sweeps_then_exactly_one_resolved(prefect_harness, stack_tree,
                                                                           stack_containers, lone_web, mm, tmp_path):
    from flows.health import health_sweep

    project, container = lone_web
    path = write_stack(stack_tree, tmp_path, project=project, mm=mm,
                       containers={"web": {"service": "web", "image": "busybox"}})
    sweep = lambda: health_sweep(stack_file=path, endpoints={"odoo-core": stack_containers["odoo-core"]["health_url"]})  # noqa: E731
    first = sweep()  # defaults: alert after 3 failures, resolve after 2 successes
    assert [r for r in first["results"] if r["status"] == "fail"] == []
    assert {"http.odoo-core", "db.tcp", "db.tls", "db.select1", "db.connections", "container.web",
            "container.web.restarts", "container.web.cpu", "container.web.memory", "host.cpu", "host.memory",
            "host.disk:/", "host.network"} <= set(by_name(first))
    container.stop(timeout=1)
    statuses = []
    for _ in range(4):
        out = sweep()
        statuses.append(by_name(out)["container.web"]["status"])
        assert len(mm.messages) == (1 if len(statuses) >= 3 else 0)  # quiet, alert on the 3rd, quiet again
    assert statuses == ["fail"] * 4
    alert = mm.messages[0]["attachments"][0]
    assert (alert["title"], alert["color"]) == ("ALERT: container.web on sandbox", "#a30200")
    fields = {f["title"]: f["value"] for f in alert["fields"]}
    assert fields["value"].startswith("exited") and fields["threshold"] == "running" and "since" in fields
    assert "exit code" in alert["text"]
    failing = by_name(out)["container.web"]
    assert failing["since"] == fields["since"] and failing["alerting"] == "yes"
    container.start()
    for _ in range(3):
        out = sweep()
    assert by_name(out)["container.web"]["status"] == "ok"
    assert posts(mm) == [[("ALERT: container.web on sandbox", "#a30200")],
                         [("RESOLVED: container.web on sandbox", "#2eb886")]]
    state = (tmp_path / "state" / "health-state.json").read_text()
    assert '"container.web"' in state and '"alerting": false' in state


@pytest.fixture
def small_disk(sshd, tmp_path):
    """A 1 MiB tmpfs mounted on the 'droplet' (the SSH server's mount namespace), at a path with a space."""
    from odoo_stack_ops.executors.ssh import SSHExecutor

    mnt = tmp_path / "small disk"
    mnt.mkdir()
    ex = SSHExecutor(sshd.ssh_config())
    ex.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)])
    try:
        yield ex, str(mnt)
    finally:
        ex.run(["umount", str(mnt)], check=False)
        ex.close()


def test_disk_filled_past_the_threshold_alerts_and_resolves(prefect_harness, stack_tree, small_disk, mm, tmp_path):
    from flows.health import health_sweep

    ex, mnt = small_disk
    path = write_stack(stack_tree, tmp_path, project=None, containers={}, mm=mm)
    sweep = lambda: health_sweep(stack_file=path, fail_after=1, ok_after=1, disk_paths=[mnt, "/", "/no/such/dir"])  # noqa: E731
    assert by_name(sweep())[f"host.disk:{mnt}"]["status"] == "ok"
    ex.run(["dd", "if=/dev/zero", f"of={mnt}/fill", "bs=1024", "count=900"])
    mm.fail_next = 1  # Mattermost answers 500 once: the alert is not lost, it goes out on the next sweep
    refused = sweep()
    assert refused["notices"] == [{"check": f"host.disk:{mnt}", "action": "alert", "delivered": False}]
    assert mm.messages == []
    out = by_name(sweep())
    disk = out[f"host.disk:{mnt}"]
    assert (disk["status"], disk["threshold"]) == ("fail", "> 85 %")
    assert disk["value"] == f"88 % of 1.0 MiB on {mnt}"
    assert out["host.disk:/"]["status"] == "ok"
    assert out["host.disk:/no/such/dir"]["value"].endswith("on /")  # judged by the filesystem that would hold it
    ex.run(["rm", f"{mnt}/fill"])
    sweep()
    assert posts(mm) == [[(f"ALERT: host.disk:{mnt} on sandbox", "#a30200")],
                         [(f"RESOLVED: host.disk:{mnt} on sandbox", "#2eb886")]]
    assert mm.messages[0]["attachments"][0]["fields"][0] == {"short": True, "title": "value",
                                                             "value": f"88 % of 1.0 MiB on {mnt}"}


def test_tls_as_sslmode_require_demands(pg_tls, pg):
    ok = {r.name: r for r in checks.database(pg_tls.database_config("postgres", sslmode="require"), timeout=5)}
    assert [ok[n].status for n in ("db.tcp", "db.tls", "db.select1", "db.connections")] == ["ok"] * 4
    assert ok["db.tls"].value.startswith("TLSv1.") and "certificate expires in" in ok["db.tls"].value
    assert "TLS on" in ok["db.select1"].value and ok["db.connections"].value.endswith("/25")
    full = {r.name: r for r in checks.database(
        pg_tls.database_config("postgres", sslmode="verify-full", sslrootcert=pg_tls.ca_file), timeout=5)}
    assert full["db.tls"].status == "ok" and full["db.select1"].status == "ok"
    plain = {r.name: r for r in checks.database(pg.database_config("postgres", sslmode="require"), timeout=5)}
    assert plain["db.tcp"].status == "ok"
    assert (plain["db.tls"].status, plain["db.tls"].value) == ("fail", "server refuses TLS")
    assert plain["db.select1"].status == "fail" and "SSL" in plain["db.select1"].evidence
    bad_password = pg_tls.database_config("postgres", sslmode="require").model_copy(update={"password": SecretStr("wrong-pw-x")})
    wrong = {r.name: r for r in checks.database(bad_password, timeout=5)}
    assert wrong["db.tls"].status == "ok" and wrong["db.select1"].status == "fail"
    assert "password authentication failed" in wrong["db.select1"].evidence
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    (closed,) = checks.database(pg.database_config().model_copy(update={"port": closed_port}), timeout=2)
    assert (closed.name, closed.status) == ("db.tcp", "fail")


@pytest.fixture
def do_api(tmp_path):
    server = DigitalOceanStandIn(tmp_path / "do")
    yield server
    server.stop()


def test_digitalocean_monitoring_through_pydo(stack_tree, do_api):
    tree = {**stack_tree, "digitalocean": {"token": do_api.token, "api_endpoint": do_api.endpoint,
                                           "ca_bundle": str(do_api.ca_file)}}
    cfg = validate_tree(tree)
    now = time.time()
    first = checks.digitalocean(cfg.digitalocean, cfg.thresholds, now, timeout=10)
    assert first.samples == {"do": {"droplet_id": 3164494}}
    calm = {r.name: r for r in first.results}
    assert {n: r.status for n, r in calm.items()} == {"do.cpu": "ok", "do.memory": "ok", "do.disk:/": "ok",
                                                      "do.network": "ok"}
    assert calm["do.cpu"].value == "10.0 %" and calm["do.memory"].value == "40.0 %"
    assert calm["do.network"].value == "in 2.00 / out 1.00 Mbps"
    paths = sorted({p.split("?")[0] for p in do_api.requests})
    assert paths == ["/v2/droplets"] + [f"/v2/monitoring/metrics/droplet/{m}" for m in (
        "bandwidth", "cpu", "filesystem_free", "filesystem_size", "memory_available", "memory_total")]
    assert any("interface=public" in p and "direction=outbound" in p for p in do_api.requests)
    assert any(p.startswith("/v2/droplets?") and "name=odoo-erp-prod" in p for p in do_api.requests)
    do_api.cpu_busy_percent, do_api.memory_used_percent = 95, 93
    do_api.disks["/"] = (160 * 10**9, 90.0)
    do_api.bandwidth_mbps[("public", "outbound")] = 150.0
    do_api.requests.clear()
    hot = {r.name: r for r in checks.digitalocean(cfg.digitalocean, cfg.thresholds, now, 10, known_id=3164494).results}
    assert not any(p.startswith("/v2/droplets") for p in do_api.requests)  # the id was kept: no lookup
    assert {n: r.status for n, r in hot.items()} == {"do.cpu": "fail", "do.memory": "fail", "do.disk:/": "fail",
                                                     "do.network": "fail"}
    assert hot["do.cpu"].value == "95.0 %, above for 5 min"
    wrong = validate_tree({**tree, "digitalocean": {**tree["digitalocean"], "token": "dop_v1_wrong_token_x"}})
    (denied,) = checks.digitalocean(wrong.digitalocean, wrong.thresholds, now, timeout=10).results
    assert (denied.name, denied.status, denied.value) == ("do.monitoring", "fail", "HTTP 401")
    assert "Unable to authenticate you" in denied.evidence
    assert "dop_v1_wrong_token_x" not in denied.evidence
    untrusted = validate_tree({**tree, "digitalocean": {**tree["digitalocean"], "ca_bundle": None}})
    (refused,) = checks.digitalocean(untrusted.digitalocean, untrusted.thresholds, now, timeout=10).results
    assert refused.status == "fail" and "CERTIFICATE_VERIFY_FAILED" in refused.evidence


@pytest.fixture
def hung_endpoint():
    """Accepts TCP connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/web/health"


def test_full_sweep_of_the_sandbox_stack(prefect_harness, stack_tree, stack_containers, do_api, hung_endpoint, mm,
                                         tmp_path):
    from prefect.client.orchestration import get_client

    from flows.health import health_sweep

    path = write_stack(stack_tree, tmp_path, project="sandbox", mm=mm,
                       containers=copy.deepcopy(validate_tree(stack_tree).model_dump(mode="json")["containers"]),
                       digitalocean={"token": do_api.token, "api_endpoint": do_api.endpoint,
                                     "ca_bundle": str(do_api.ca_file)})
    endpoints = {s: stack_containers[s]["health_url"] for s in ("nginx-proxy", "mattermost")} | {"hung": hung_endpoint}
    out = health_sweep(stack_file=path, endpoints=endpoints, check_timeout_s=1, fail_after=1)
    rows = by_name(out)
    services = ("odoo-core", "nginx-proxy", "n8n", "mattermost")
    expected = {f"http.{s}" for s in services} | {f"container.{s}{x}" for s in services
                                                  for x in ("", ".restarts", ".cpu", ".memory")}
    expected |= {"http.hung", "db.tcp", "db.tls", "db.select1", "db.connections", "host.cpu", "host.memory",
                 "host.disk:/", "host.network", "do.cpu", "do.memory", "do.disk:/", "do.network", "do.cluster.backups"}
    assert set(rows) == expected
    assert {n for n, r in rows.items() if r["status"] == "fail"} == {"http.hung"}
    assert rows["http.hung"]["value"] == "unreachable" and "timed out" in rows["http.hung"]["evidence"]
    assert out["seconds"] < 10  # every check at once: the sweep lasts about as long as the slowest
    assert posts(mm) == [[("ALERT: http.hung on sandbox", "#a30200")]]
    again = by_name(health_sweep(stack_file=path, endpoints=endpoints, check_timeout_s=1, fail_after=1))
    assert again["host.cpu"]["value"].endswith("%") and again["host.network"]["value"].endswith("Mbps")
    assert again["container.odoo-core.cpu"]["value"].endswith("of the host")
    assert len(mm.messages) == 1  # still failing: not repeated
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        tables = [a for a in artifact if a.key == "health-sweep"]
    assert tables and "http.hung" in str(tables[0].data) and "since" in str(tables[0].data)


def test_unhealthy_and_crash_looping_containers(docker_client, podman, sandbox_image, unique):
    project = f"hc{unique}"
    labels = lambda s: {"com.docker.compose.service": s, "com.docker.compose.project": project}  # noqa: E731
    sick = docker_client.containers.run(sandbox_image, ["sleep", "100000"], detach=True, init=True,
                                        name=f"{project}-sick-1", labels=labels("sick"), network_mode="host",
                                        healthcheck={"test": ["CMD-SHELL", "test -f /tmp/ready"],
                                                     "interval": 3_600_000_000_000, "retries": 1})
    crash = docker_client.containers.run(sandbox_image, ["sh", "-c", "sleep 0.3; exit 3"], detach=True,
                                         name=f"{project}-crash-1", labels=labels("crash"), network_mode="host",
                                         restart_policy={"Name": "on-failure", "MaximumRetryCount": 1000})
    try:
        first = checks.containers(docker_client, ["sick", "crash", "absent"], project, {})
        r = {x.name: x for x in first.results}
        assert r["container.sick"].status == "warn" and r["container.sick"].value == "running, starting"
        assert r["container.absent"].status == "fail" and r["container.absent"].value == "missing"
        for _ in range(2):  # what the healthcheck timer does on a Docker host
            subprocess.run(["podman", "--root", str(podman.base / "root"), "--runroot", str(podman.base / "runroot"),
                            "healthcheck", "run", sick.id], env=podman.env(), capture_output=True, check=False)

        def swept() -> checks.Reading | None:
            reading = checks.containers(docker_client, ["sick", "crash"], project, first.samples["restarts"])
            found = {x.name: x.value for x in reading.results}
            restarted = reading.samples["restarts"]["crash"] > first.samples["restarts"]["crash"]
            return reading if found["container.sick"] == "running, unhealthy" and restarted else None

        second = wait_until(swept, 20, "the sick container unhealthy and the crashing one restarted", every=0.2)
        r = {x.name: x for x in second.results}
        assert (r["container.sick"].status, r["container.sick"].value) == ("fail", "running, unhealthy")
        assert r["container.crash.restarts"].status == "fail" and "since the last sweep" in r["container.crash.restarts"].value
        assert second.samples["restarts"]["crash"] > first.samples["restarts"]["crash"]
    finally:
        force_remove(sick)
        force_remove(crash)


def test_diagnose_collects_the_runbooks_evidence(prefect_harness, stack_tree, stack_file, lone_web, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.health import diagnose

    project, container = lone_web
    path = write_stack(stack_tree, tmp_path, project=project, mm=None,
                       containers={"web": {"service": "web", "image": "busybox"}})
    wait_until(lambda: b"Some modules are not loaded" in container.logs(), 20, "the container's last line", every=0.2)
    out = diagnose(stack_file=path, service="web")
    assert out["verdicts"] == {"Container won't start": "ok", "Database connection failed": "ok",
                               "Module installation failed": "problem"}
    assert out["summaries"]["Module installation failed"] == (
        "missing or unmet: ipai_finance_ppm, ipai_core, ipai_enterprise_bridge")
    md = out["markdown"]
    for heading in ("### docker compose logs web --tail 100", "### df -h", "### free -m",
                    "### TCP, TLS, credentials (SELECT 1)", "### grep -i missing"):
        assert heading in md
    assert "Odoo version 18.0" in md and "Filesystem" in md and "Mem:" in md and "db.select1: ok" in md
    container.stop(timeout=1)
    stopped = diagnose(stack_file=path, service="web")
    assert stopped["verdicts"]["Container won't start"] == "problem"
    assert f"{project}-web-1 is exited" in stopped["summaries"]["Container won't start"]
    # the seed's own module check: `odoo -d odoo_core --stop-after-init` inside the real odoo-core stand-in
    core = diagnose(stack_file=stack_file, service="odoo-core", odoo_dry_start=True)
    assert core["verdicts"]["Module installation failed"] == "ok"
    assert "### odoo -d odoo_core --stop-after-init" in core["markdown"] and "exit code 0" in core["markdown"]
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_latest_artifacts() if a.key == "diagnose"]
    assert found and "Diagnosis of odoo-core on sandbox" in str(found[0].data)
