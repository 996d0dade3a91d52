"""Several workers, crashes included: two process workers on `ops-process` and a Docker worker on `ops-docker`,
one server; the worker running a backup killed with its run (as when a machine dies) → the run ends Crashed
(heartbeats stop; the automation from deployments/setup.py), the failure automation posts it to Mattermost,
nothing half-written is listed, the next run, taken by the surviving process worker, is green, and so is a
run through the Docker worker beside them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess

import pytest

from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect, prefect_bin, stop_group
from tests.checks import wait_until
from tests.faults import S3FaultProxy
from tests.fixtures.stack import write_tree
from tests.test_docker_pool import container_conf, docker_run_args

pytestmark = pytest.mark.integration
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def manifest_keys(s3, bucket: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="odoo-erp-prod/manifests/")
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def assert_whole(s3, bucket: str, keys: set[str]) -> None:
    """Every listed backup is complete: its dump and its filestore manifest are there (a kill that lands after
    the publish leaves a whole backup listed; one before it, none)."""
    client = s3.client()
    for key in keys:
        doc = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        for part in (doc["dump"]["key"], doc["filestore"]["manifest_key"]):
            client.head_object(Bucket=bucket, Key=part)


def heartbeats(prefect: LocalPrefect, run_id: str) -> list:
    """Heartbeat events the server holds for the run (a run killed before its first one reached the server
    cannot be told from a slow one: see the README)."""
    body = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                       "resource": {"id": [f"prefect.flow-run.{run_id}"]}}, "limit": 10}
    return prefect.http.post(f"{prefect.api}/events/filter", json=body, timeout=10).json()["events"]


@pytest.mark.timeout(1200)
def test_a_worker_killed_mid_backup_crashes_the_run_and_the_next_run_is_green(stack_tree, s3, bucket, mattermost,
                                                                              pg_tls, sshd, podman, worker_image,
                                                                              tmp_path):
    # a server of its own (its zombie automation fires after 45 s) keeping its state in PostgreSQL, as deployed
    prefect = LocalPrefect(tmp_path / "prefect", server_env=pg_tls.prefect_server_env("prefect_workers"))
    tag, _timings = worker_image
    conf = tmp_path / "etc"
    secret_env = container_conf(conf, stack_tree, sshd, pg_tls)  # the Docker worker's runs read Secret blocks
    # the process workers' runs reach S3 through a proxy that holds the doomed run's first dump part until the kill:
    # a backup of the sandbox takes seconds, and a kill that comes after it finished tests nothing
    proxy = S3FaultProxy(s3.endpoint)
    held = proxy.hold(lambda m, p: m == "PUT" and "/db/" in p and "partNumber=" in p)
    stack_file = write_tree({**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}},
                            tmp_path / "stack.yaml")
    env = {"STACK_OPS_FILE": stack_file, "MATTERMOST_WEBHOOK_URL": mattermost.url, "ZOMBIE_AFTER_S": "45"}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        prefect.start()
        prefect.python("-m", "deployments.setup", extra_env={**secret_env, **env})
        prefect.cli("--no-prompt", "deploy", "--name", "nightly", "--name", "backup/nightly-docker", extra_env=env)
        for name, pool, extra in (("worker-1", "ops-process", {}), ("worker-2", "ops-process", {}),
                                  ("docker-1", "ops-docker", {"DOCKER_HOST": podman.base_url})):
            log = (tmp_path / f"{name}.log").open("ab")
            workers.append(subprocess.Popen([prefect_bin(), "worker", "start", "--pool", pool, "--name", name],
                                            env=prefect.env({**env, **extra}), cwd=PROJECT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
        before = manifest_keys(s3, bucket)
        deployment = prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly", timeout=10).json()["id"]
        run = lambda: prefect.http.post(f"{prefect.api}/deployments/{deployment}/create_flow_run", json={},  # noqa: E731
                                    timeout=10).json()["id"]
        read = lambda r: prefect.http.get(f"{prefect.api}/flow_runs/{r}", timeout=10).json()  # noqa: E731
        doomed = run()
        wait_until(held.reached.is_set, 300, "the doomed run's first dump part at S3", 0.2)
        started = wait_until(lambda: read(doomed)["state"]["type"] == "RUNNING" and read(doomed).get("infrastructure_pid"),
                             300, "the run started", 0.2)
        flow_pid = int(started.rsplit(":", 1)[-1])
        wait_until(lambda: heartbeats(prefect, doomed), 60, "the run's first heartbeat on the server", 0.5)
        with open(f"/proc/{flow_pid}/stat") as fh:
            worker_pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        killed = [w for w in workers if w.pid == worker_pid]
        assert killed, "the run's process is not a child of either worker"
        for pid in (flow_pid, worker_pid):  # the machine is gone: the worker and its run die at once
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        held.release.set()  # its client is gone: the held part never reaches S3
        state = wait_until(lambda: read(doomed)["state"]["type"] in TERMINAL and read(doomed)["state"], 240,
                           "the run marked Crashed", 2)
        assert state["type"] == "CRASHED", state
        name = read(doomed)["name"]
        wait_until(lambda: any(name in str(m) and "Crashed" in str(m) for m in mattermost.messages), 90,
                   "the Crashed post in Mattermost", 1)
        assert_whole(s3, bucket, manifest_keys(s3, bucket) - before)  # nothing half-written listed
        killed_keys = manifest_keys(s3, bucket) - before
        survivors = [w for w in workers if w.pid != worker_pid]
        assert len(survivors) == 2 and all(w.poll() is None for w in survivors)
        green = run()
        final = wait_until(lambda: read(green)["state"]["type"] in TERMINAL and read(green)["state"], 400,
                           "the next run finished", 2)
        assert final["type"] == "COMPLETED", final
        assert len(manifest_keys(s3, bucket) - before - killed_keys) == 1
        # the Docker worker on the same server: a run in a flow-run container, to Completed
        out = prefect.cli("deployment", "run", "backup/nightly-docker", "--watch", "--watch-timeout", "480",
                          *docker_run_args(tag, conf), timeout=540)
        docker_run = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        assert read(docker_run)["state"]["type"] == "COMPLETED", read(docker_run)["state"]
        assert len(manifest_keys(s3, bucket) - before - killed_keys) == 2
        assert_whole(s3, bucket, manifest_keys(s3, bucket) - before)
    finally:
        for w in workers:
            stop_group(w, (signal.SIGINT, signal.SIGINT, signal.SIGTERM), waits=(1.5, 10, 10))
        prefect.stop()
        proxy.stop()
        pg_tls.dropdb("prefect_workers")
