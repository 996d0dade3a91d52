"""stack-update and stack-restart on the test bed: a real registry on loopback holds builds of a stand-in image
under one tag; containers of a project of their own (not the shared sandbox stack) are created from it through
podman's Docker API, updated, gated on real HTTP and rolled back. The pure planner is tested directly first."""

from __future__ import annotations

import threading
import time

import pytest
import requests
import yaml

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.notify import ALERTED
from odoo_stack_ops.stack import plan as pl

PROJECT = "updtest"
SERVICES = ("web", "odoo-core")


# --- pure: plan, create body, config diff ------------------------------------------------------------------------

def attrs(**over):
    base = {
        "Id": "abcdef1234567890" + "0" * 48, "Name": "/p-web-1", "Image": "sha256:old",
        "Config": {"Hostname": "abcdef123456", "Env": ["PATH=/usr/bin", "A=1", "HOSTNAME=abcdef123456"],
                   "Cmd": ["serve", "8080"], "Entrypoint": None, "Image": "reg:5000/web:stable", "WorkingDir": "/",
                   "Labels": {"com.docker.compose.service": "web", "org.image.version": "1"},
                   "ExposedPorts": {"80/tcp": {}, "9000/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGTERM",
                   "AttachStdout": True, "Healthcheck": {"Test": ["CMD", "true"]}},
        "HostConfig": {"Binds": ["named:/srv:rw"], "NetworkMode": "odoo-network",
                       "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
        "Mounts": [{"Type": "volume", "Name": "named", "Destination": "/srv", "RW": True},
                   {"Type": "volume", "Name": "f" * 64, "Destination": "/data", "RW": True}],
        "NetworkSettings": {"Networks": {"odoo-network": {"Aliases": ["web", "abcdef123456"]},
                                         "other": {"Aliases": ["w2"]}}},
    }
    base.update(over)
    return base


IMAGE = {"Env": ["PATH=/usr/bin"], "Cmd": ["serve", "8080"], "Labels": {"org.image.version": "1"},
         "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "Healthcheck": {"Test": ["CMD", "true"]}}


def test_creation_body_keeps_the_containers_own_config_and_drops_what_the_image_gave():
    body = pl.creation_body(attrs(), IMAGE)
    assert body["Env"] == ["A=1"]  # image env and the runtime HOSTNAME gone, so the new image's PATH applies
    assert "Cmd" not in body and "Healthcheck" not in body and "WorkingDir" not in body and "Hostname" not in body
    assert body["Labels"] == {"com.docker.compose.service": "web"}
    assert body["ExposedPorts"] == {"9000/tcp": {}} and body["Volumes"] is None
    assert body["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert body["HostConfig"]["Binds"] == ["named:/srv:rw", f"{'f' * 64}:/data"]  # anonymous volume carried over
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"odoo-network": {"Aliases": ["web"]}}}
    assert pl.extra_networks(attrs()) == {"other": {"Aliases": ["w2"]}}
    assert "AttachStdout" not in body and body["Image"] == "reg:5000/web:stable"
    assert pl.for_display(body)["Env"] == ["A=***"] and body["Env"] == ["A=1"]  # artifacts show no env values


def test_creation_body_keeps_an_explicit_command_and_hostname():
    a = attrs()
    a["Config"] = {**a["Config"], "Cmd": ["serve", "9999"], "Hostname": "odoo"}
    body = pl.creation_body(a, IMAGE)
    assert body["Cmd"] == ["serve", "9999"] and body["Hostname"] == "odoo"
    host = attrs(HostConfig={"NetworkMode": "host"})
    host["Config"] = {**host["Config"], "Hostname": "droplet"}
    assert "Hostname" not in pl.creation_body(host, IMAGE)  # Docker refuses a hostname on the host network


def test_config_diff_names_fields_and_ignores_env_order():
    a = pl.creation_body(attrs(), IMAGE)
    b = pl.creation_body(attrs(), IMAGE)
    b["Env"] = list(reversed(b["Env"]))
    assert pl.config_diff(a, b) == []
    b["HostConfig"] = {**b["HostConfig"], "RestartPolicy": {"Name": "no"}}
    b["Labels"] = {}
    diff = pl.config_diff(a, b)
    assert set(diff) == {"HostConfig.RestartPolicy.Name", "Labels.com.docker.compose.service"}


def record(service, image_id, ref="r/x:1", digests=()):
    return pl.Record(service, f"p-{service}-1", "c" * 64, ref, image_id, tuple(digests), {}, {})


def test_plan_changes_only_new_images_and_puts_odoo_last():
    records = {"odoo-core": record("odoo-core", "i1"), "n8n": record("n8n", "i2"), "nginx-proxy": record("nginx-proxy", "i3")}
    plan = pl.plan_update(records, {"odoo-core": "new1", "n8n": "i2", "nginx-proxy": "new3"})
    assert plan.steps == ["nginx-proxy", "odoo-core"] and plan.unchanged == ["n8n"]
    assert pl.plan_update(records, {"odoo-core": "i1", "n8n": "i2", "nginx-proxy": "i3"}).nothing_to_do


def test_dry_run_rows_compare_registry_digest_with_the_running_ones():
    records = {"web": record("web", "sha256:i", "reg:5000/web:1", ["reg:5000/web@sha256:aaa"]),
               "db": record("db", "sha256:j", "reg:5000/db:1", ["reg:5000/db@sha256:bbb"])}
    rows = pl.dry_run_rows(records, {"web": "sha256:aaa", "db": "sha256:ccc"})
    assert [(r["service"], r["update"]) for r in rows] == [("web", "unchanged"), ("db", "would change")]
    assert rows[1]["running"] == "sha256:bbb" and rows[1]["registry"] == "sha256:ccc"


def test_refs_services_and_compose_argv():
    assert pl.split_ref("127.0.0.1:5000/web:stable") == ("127.0.0.1:5000/web", "stable")
    assert pl.split_ref("127.0.0.1:5000/web") == ("127.0.0.1:5000/web", "latest")
    assert pl.split_ref("odoo@sha256:ab") == ("odoo", "@sha256:ab")
    assert pl.repo_digest(["docker.io/library/odoo@sha256:ab"], "odoo:18.0") == "sha256:ab"
    assert pl.check_services([], ["a", "b"]) == ["a", "b"]
    with pytest.raises(OpsError, match="unknown"):
        pl.check_services(["c"], ["a"])
    with pytest.raises(OpsError, match="refusing"):
        pl.check_services(["a; rm -rf /"], ["a; rm -rf /"])
    assert pl.compose_argv(["docker", "compose"], "/opt/odoo", "up", ["odoo-core"], force_recreate=True) == [
        "docker", "compose", "--project-directory", "/opt/odoo", "up", "-d", "--no-deps", "--force-recreate", "--",
        "odoo-core"]


def test_the_container_runbook_points_at_the_seeds_command():
    from odoo_stack_ops.health.runbooks import container_action

    assert container_action(False, None) == "start"
    assert container_action(True, "unhealthy") == "restart"
    assert container_action(True, "healthy") is None and container_action(True, None) is None


def test_registry_location_defaults():
    from odoo_stack_ops.stack.registry import locate

    assert locate("odoo:18.0") == ("registry-1.docker.io", "library/odoo", "18.0")
    assert locate("n8nio/n8n") == ("registry-1.docker.io", "n8nio/n8n", "latest")
    assert locate("127.0.0.1:5000/standin:stable") == ("127.0.0.1:5000", "standin", "stable")


# --- on the test bed -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builds(registry, podman, sandbox_image):
    """Builds of the stand-in, by name: v1 (running at the start of each test), v2 and v3 (good, each
    serving its version), broken (its server exits at once), slow (v4, 2 s start-up)."""
    from odoo_stack_ops.sandbox import registry as reg

    made = {}
    for name, files in {"v1": {}, "v2": {}, "v3": {}, "broken": {"/usr/bin/sandbox-entry": reg.BROKEN_ENTRY},
                        "slow": {"/usr/bin/sandbox-entry": reg.slow_entry(2)}}.items():
        made[name] = reg.build(podman, sandbox_image, f"localhost/updtest-build:{name}",
                               {"/var/www/version": f"{name}\n", **files})
    return made


def publish(podman, registry, service, build):
    """Make the registry's `<service>:stable` the given build (push under the one tag)."""
    from odoo_stack_ops.sandbox import registry as reg

    ref = f"{registry.host}/standin-{service}:stable"
    reg.push(podman, f"localhost/updtest-build:{build}", ref)
    return ref


@pytest.fixture
def updtest(prefect_harness, stack_tree, registry, podman, docker_client, builds, tmp_path):
    """Containers web and odoo-core of project updtest on v1 (pulled from the registry), and a stack file
    whose containers are these. odoo-core shares the sandbox's filestore volume (its pre-update backup)."""
    from odoo_stack_ops.prefect_local import free_port
    from odoo_stack_ops.sandbox.podman import force_remove

    for ctr in docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        force_remove(ctr)
    ports, made = {}, {}
    (tmp_path / "srv").mkdir()
    for service in SERVICES:
        ref = publish(podman, registry, service, "v1")
        docker_client.images.pull(ref)
        ports[service] = free_port()
        web = service == "web"
        made[service] = docker_client.containers.run(
            ref, ["/usr/bin/sandbox-entry", service, str(ports[service])], name=f"{PROJECT}-{service}-1",
            detach=True, network_mode="host", init=True,
            labels={"com.docker.compose.service": service, "com.docker.compose.project": PROJECT,
                    "com.example.tier": "front" if web else "erp"},
            environment={"HEALTH_PORT": str(ports[service]), "TIER": service},
            volumes=({f"{PROJECT}-web-data": {"bind": "/data", "mode": "rw"},
                      str(tmp_path / "srv"): {"bind": "/srv", "mode": "ro"}} if web else
                     {"sandbox-odoo-web-data": {"bind": "/var/lib/odoo", "mode": "rw"}}),
            restart_policy={"Name": "unless-stopped"} if web else None,
            healthcheck={"test": ["CMD", "true"], "interval": 30 * 10**9} if web else None,
        )
    health = {"web": f"http://127.0.0.1:{ports['web']}/healthz",
              "odoo-core": f"http://127.0.0.1:{ports['odoo-core']}/web/health"}
    for url in health.values():
        _wait(url)
    tree = {**stack_tree, "docker": {**stack_tree["docker"], "compose_project": PROJECT},
            "containers": {"web": {"service": "web", "image": "standin-web", "ports": [ports["web"]],
                                   "health_path": "/healthz"},
                           "odoo-core": {"service": "odoo-core", "image": "standin-odoo-core",
                                         "ports": [ports["odoo-core"]], "health_path": "/web/health"}},
            "odoo": {**stack_tree["odoo"], "health_url": health["odoo-core"]},
            "update": {"health_timeout_s": 10, "stable_s": 1, "stop_timeout_s": 2, "verify_backup": False}}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    yield {"file": str(path), "health": health, "ports": ports}
    for ctr in docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        force_remove(ctr)


def _wait(url, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def inspect(docker_client, service):
    found = docker_client.containers.list(filters={"label": [f"com.docker.compose.project={PROJECT}",
                                                             f"com.docker.compose.service={service}"]})
    assert len(found) == 1, found
    return docker_client.api.inspect_container(found[0].id)


def served_version(ports, service):
    return requests.get(f"http://127.0.0.1:{ports[service]}/version", timeout=2).text.strip()


def assert_same_configuration(before, after):
    """Field by field through the Engine API: everything but the instance (id, times, state, image id) equal."""
    for section in ("Config", "HostConfig"):
        for key in sorted(set(before[section]) | set(after[section])):
            old, new = before[section].get(key), after[section].get(key)
            if key == "Env":
                old, new = sorted(old or []), sorted(new or [])
            assert old == new, f"{section}.{key}: {old!r} != {new!r}"
    assert before["Name"] == after["Name"]
    strip = [{k: v for k, v in m.items() if k != "Source" or m["Type"] == "bind"} for m in before["Mounts"]]
    assert strip == [{k: v for k, v in m.items() if k != "Source" or m["Type"] == "bind"} for m in after["Mounts"]]
    assert before["NetworkSettings"]["Networks"].keys() == after["NetworkSettings"]["Networks"].keys()


def run_update(updtest, **kw):
    from flows.stack import UpdateRequest, stack_update

    return stack_update(UpdateRequest(**kw), stack_file=updtest["file"])


def test_update_pulls_the_new_digest_recreates_identically_and_passes_the_gate(
        updtest, podman, registry, docker_client, builds, mattermost, stack_tree):
    from odoo_stack_ops.config import validate_tree
    from tests.fixtures.stack import published

    before = {s: inspect(docker_client, s) for s in SERVICES}
    for service in SERVICES:
        publish(podman, registry, service, "v2")
    mattermost.clear()
    out = run_update(updtest)
    assert list(out["updated"]) == ["web", "odoo-core"]  # odoo-core last
    assert out["pre_update_backup"] and len(published(validate_tree(stack_tree))) == 1
    for service in SERVICES:
        after = inspect(docker_client, service)
        assert after["Id"] != before[service]["Id"] and after["Image"] == builds["v2"]
        digest = registry.digest(f"standin-{service}", "stable")
        assert f"{registry.host}/standin-{service}@{digest}" in docker_client.api.inspect_image(after["Image"])[
            "RepoDigests"]
        assert_same_configuration(before[service], after)
        assert served_version(updtest["ports"], service) == "v2"
        assert after["State"]["Running"]
    assert "updated web, odoo-core" in mattermost.titles()[-1]
    assert run_update(updtest)["result"].startswith("nothing to do")


def test_a_failed_gate_puts_every_updated_service_back_on_its_digest(
        updtest, podman, registry, docker_client, builds, mattermost):
    before = {s: inspect(docker_client, s) for s in SERVICES}
    publish(podman, registry, "web", "v3")  # web updates fine, then odoo-core's new build fails its gate
    publish(podman, registry, "odoo-core", "broken")
    mattermost.clear()
    with pytest.raises(OpsError, match="failed at odoo-core") as err:
        run_update(updtest, backup=False)  # the backup before odoo-core is the success test's
    text = str(err.value)
    assert "configuration error in the new build" in text  # the failing container's own log lines
    assert "every service is back on its previous image and healthy" in text and "what to do" in text
    for service in SERVICES:
        after = inspect(docker_client, service)
        assert after["Image"] == builds["v1"], service
        assert docker_client.api.inspect_image(f"{registry.host}/standin-{service}:stable")["Id"] == builds["v1"]
        assert_same_configuration(before[service], after)
        assert served_version(updtest["ports"], service) == "v1"
    assert "FAILED at odoo-core" in mattermost.titles()[-1]
    assert text.endswith(ALERTED)  # posted: the failure automation does not post it again


def test_dry_run_lists_the_digests_that_would_change_and_changes_nothing(
        updtest, podman, registry, docker_client, builds):
    before = {s: inspect(docker_client, s)["Id"] for s in SERVICES}
    publish(podman, registry, "web", "v2")
    out = run_update(updtest, dry_run=True)
    rows = {r["service"]: r for r in out["rows"]}
    assert rows["web"]["update"] == "would change" and rows["odoo-core"]["update"] == "unchanged"
    assert rows["web"]["registry"] == registry.digest("standin-web", "stable")
    assert {s: inspect(docker_client, s)["Id"] for s in SERVICES} == before
    assert docker_client.api.inspect_image(f"{registry.host}/standin-web:stable")["Id"] == builds["v1"]  # not pulled


def test_a_second_update_waits_for_the_first_to_release_the_lock(updtest, podman, registry, docker_client, builds,
                                                                 pg_tls):
    publish(podman, registry, "web", "slow")  # 2 s start-up keeps the first update holding the lock
    results, ended = {}, {}

    def go(name):
        try:
            results[name] = run_update(updtest, services=["web"])
        except Exception as exc:  # noqa: BLE001 - reported below
            results[name] = exc
        ended[name] = time.monotonic()

    first = threading.Thread(target=go, args=("first",))
    first.start()
    deadline = time.monotonic() + 30
    while not pg_tls.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted", "postgres")[0][0]:
        assert time.monotonic() < deadline and first.is_alive(), results
        time.sleep(0.05)
    second = threading.Thread(target=go, args=("second",))
    second.start()
    first.join(60)
    second.join(60)
    assert list(results["first"]["updated"]) == ["web"], results
    assert results["second"]["result"].startswith("nothing to do"), results  # it ran after the first finished
    assert ended["second"] > ended["first"]
    assert inspect(docker_client, "web")["Image"] == builds["slow"]


def test_restart_flow_and_service_tasks(updtest, docker_client):
    from flows.stack import stack_restart
    from odoo_stack_ops.config import load_config
    from odoo_stack_ops.connect import Connections
    from tasks.stack import health_gate, stop_service, up_service

    started = inspect(docker_client, "web")["State"]["StartedAt"]
    out = stack_restart(services=["web"], stack_file=updtest["file"])
    assert out["healthy_after_s"]["web"] >= 0 and inspect(docker_client, "web")["State"]["StartedAt"] != started
    cfg = load_config(updtest["file"])
    with Connections(cfg) as conns:
        stop_service.fn(cfg, conns, "odoo-core")
        assert up_service.fn(cfg, conns, "odoo-core") == "started"
        assert health_gate.fn(cfg, conns, "odoo-core") >= 0
        assert up_service.fn(cfg, conns, "odoo-core") == "already up to date and running"


def test_diagnose_starts_a_stopped_service_when_asked(updtest, docker_client):
    from flows.health import diagnose

    found = docker_client.containers.list(filters={"label": [f"com.docker.compose.project={PROJECT}",
                                                             "com.docker.compose.service=odoo-core"]})
    found[0].stop(timeout=2)
    looked = diagnose(stack_file=updtest["file"], service="odoo-core")  # a diagnosis alone changes nothing
    assert looked["verdicts"]["Container won't start"] == "problem" and "Fix: start odoo-core" not in looked["verdicts"]
    fixed = diagnose(stack_file=updtest["file"], service="odoo-core", fix=True)
    assert fixed["verdicts"]["Fix: start odoo-core"] == "ok", fixed["summaries"]
    assert inspect(docker_client, "odoo-core")["State"]["Running"]
    assert requests.get(updtest["health"]["odoo-core"], timeout=2).status_code == 200


KILLS = {  # the update's process SIGKILLed while it changes web
    "in-its-gate": "e.gate = lambda *a, **k: os.kill(os.getpid(), 9)",  # web runs v2, v1's container is gone
    "before-the-old-container-is-removed": "e.remove = lambda *a, **k: os.kill(os.getpid(), 9)",  # v1 set aside
    "right-after-the-stop": "import docker.api.container as c; "  # v1 stopped, no container of web running
                            "c.ContainerApiMixin.rename = lambda *a, **k: os.kill(os.getpid(), 9)",
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_an_update_killed_while_it_changes_a_service_is_rolled_back_by_the_next_run(
        updtest, podman, registry, docker_client, builds, stack_tree, kill):
    """A kill (or a cancel) skips the rollback: web was left on an image that never passed its gate, or stopped
    and set aside. The next run used to record that as the starting point (nothing to do, or no running
    container); it must put web back on the image it ran before, with its configuration, and only then update."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    from odoo_stack_ops.config import validate_tree
    from tests.fixtures.stack import free_killed_writers

    before = inspect(docker_client, "web")
    publish(podman, registry, "web", "v2")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    code = (f"import os; import odoo_stack_ops.stack.engine as e; {KILLS[kill]}\n"
            "from flows.stack import UpdateRequest, stack_update\n"
            f"stack_update(UpdateRequest(services=['web'], backup=False), stack_file={updtest['file']!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    free_killed_writers(validate_tree(stack_tree).name)
    assert "an interrupted update of web is rolled back" in run_update(updtest, dry_run=True)["result"]

    out = run_update(updtest, services=["web"])
    assert out["result"].startswith("rolled back an interrupted update of web"), out
    after = inspect(docker_client, "web")
    assert after["Image"] == builds["v1"]
    assert docker_client.api.inspect_image(f"{registry.host}/standin-web:stable")["Id"] == builds["v1"]
    assert_same_configuration(before, after)
    assert served_version(updtest["ports"], "web") == "v1"
    assert len(docker_client.containers.list(all=True, filters={"label": [
        f"com.docker.compose.project={PROJECT}", "com.docker.compose.service=web"]})) == 1  # nothing left aside
    # the mark is gone: the next run updates as asked
    assert list(run_update(updtest, services=["web"])["updated"]) == ["web"]
    assert served_version(updtest["ports"], "web") == "v2"


def test_an_update_cancelled_in_a_gate_rolls_back_at_once(updtest, podman, registry, docker_client, builds):
    """A cancel reaches the run as SIGTERM: the rollback guard used to skip it (`except Exception`), leaving web on
    an image that never passed its gate until the next run."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    before = inspect(docker_client, "web")
    publish(podman, registry, "web", "v2")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    code = ("import os, signal, time; import odoo_stack_ops.stack.engine as e\n"
            "real = e.gate\n"
            "def cancelled_once(*a, **k):\n"  # the worker's one SIGTERM; the rollback's gate is the real one
            "    e.gate = real; os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)\n"
            "e.gate = cancelled_once\n"
            "from flows.stack import UpdateRequest, stack_update\n"
            f"stack_update(UpdateRequest(services=['web'], backup=False), stack_file={updtest['file']!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-3000:]
    after = inspect(docker_client, "web")
    assert after["Image"] == builds["v1"], proc.stderr[-3000:]
    assert_same_configuration(before, after)
    assert served_version(updtest["ports"], "web") == "v1"
    assert "interrupted" not in run_update(updtest, dry_run=True)["result"], proc.stderr[-4000:]  # mark cleared
