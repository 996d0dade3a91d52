"""Alerts proven to fire: a deployment's run fails on a real Prefect server (`prefect server start`, whose
triggers and actions services run the automations), and the failure automation made by deployments/setup.py
posts to the Mattermost stand-in, with the run's link and without the webhook's secret."""

from __future__ import annotations

import re
import time

import pytest

from odoo_stack_ops.notify import ALERTED
from odoo_stack_ops.prefect_local import LocalPrefect

pytestmark = pytest.mark.integration


def _wait(predicate, timeout_s: float, what: str, seen=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout_s:g} s{seen()}")


REPEAT_S = 20  # the frequent flows' repeat window in these tests (an hour by default)


@pytest.fixture(scope="module")
def alerting(mattermost, tmp_path_factory):
    """A Prefect server with the automations deployments/setup.py makes (set up twice, as after an upgrade) and the
    ids of the flows the tests fail runs of by hand."""
    tmp = tmp_path_factory.mktemp("alerts")
    prefect = LocalPrefect(tmp / "prefect")
    # runs fail the way a broken worker set-up does: its stack file is missing
    env = {"STACK_OPS_FILE": str(tmp / "missing-stack.yaml"), "MATTERMOST_WEBHOOK_URL": mattermost.url,
           "ALERT_REPEAT_AFTER_S": str(REPEAT_S)}
    try:
        prefect.start(timeout=240)  # a loaded 2-core CI machine has been seen to need more than 90 s
        setups = [prefect.python("-m", "deployments.setup", extra_env=env) for _ in range(2)]
        flows = {name: prefect.http.post(f"{prefect.api}/flows/", json={"name": name}, timeout=10).json()["id"]
                 for name in ("backup", "health-sweep", "log-shipping")}
        yield prefect, env, setups, flows
    finally:
        prefect.stop()


def fail(prefect: LocalPrefect, flow_id: str, name: str | None, message: str, crashed: bool = False,
         deployment: str | None = None) -> str:
    """A run of the flow, named `name`, set Failed with `message` (as its engine would), or Crashed (as a worker
    does when the run's process dies): its id. With `deployment`, a run of that deployment, with Prefect's random
    name when `name` is None (the name the scheduler gives; the flow renames its run when it starts)."""
    if deployment:
        run = prefect.http.post(f"{prefect.api}/deployments/{deployment}/create_flow_run",
                                json={"name": name} if name else {}, timeout=10).json()["id"]
    else:
        run = prefect.http.post(f"{prefect.api}/flow_runs/", json={"flow_id": flow_id, "name": name},
                                timeout=10).json()["id"]
    failed = ({"type": "CRASHED", "name": "Crashed", "message": f"Flow run infrastructure exited: {message}"} if crashed
              else {"type": "FAILED", "name": "Failed", "message": f"Flow run encountered an exception: {message}"})
    assert prefect.http.post(f"{prefect.api}/flow_runs/{run}/set_state", json={"state": failed, "force": True},
                             timeout=10).json()["status"] == "ACCEPT"
    return run


def test_failed_deployment_run_posts_to_mattermost_with_its_link(alerting, mattermost):
    prefect, env, (first, again), _flows = alerting
    assert "failure automation: created" in first
    # run again (as after an upgrade of this project): the automations are brought up to date, not doubled
    assert "failure automation: updated" in again
    autos = prefect.http.post(f"{prefect.api}/automations/filter", json={}, timeout=10).json()
    frequent = "odoo-stack-ops: failing frequent run to Mattermost, once per window"
    assert sorted(a["name"] for a in autos) == ["odoo-stack-ops: crash runs whose heartbeat stopped",
                                                 "odoo-stack-ops: failed run to Mattermost", frequent,
                                                 f"{frequent}: health-sweep runs that never started",
                                                 f"{frequent}: log-shipping runs that never started"]
    mattermost.clear()
    prefect.cli("--no-prompt", "deploy", "--name", "n8n-import/on-demand", extra_env=env)
    prefect.start_worker("ops-process", env)
    out = prefect.cli("deployment", "run", "n8n-import/on-demand", extra_env=env)
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

    def state() -> str | None:
        kind = prefect.http.get(f"{prefect.api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
        return kind if kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    assert _wait(state, 180, "final state of the run") == "FAILED"

    message = _wait(lambda: next((m for m in mattermost.messages if run_id in str(m)), None), 90,
                    f"Mattermost post naming run {run_id}", lambda: f"; received: {mattermost.messages}")
    text = message["text"]
    assert f"{prefect.url}/runs/flow-run/{run_id}" in text  # the run's page in the Prefect UI
    assert "n8n-import" in text and "Failed" in text and "does not exist" in text  # what failed, and why
    assert mattermost.key not in str(message) and mattermost.url not in str(message)
    assert message.get("username") == "odoo-stack-ops"

    # a run that posted its own alert (a nightly whose database failed) is not posted again; one that did not is
    flow_id = prefect.http.get(f"{prefect.api}/flow_runs/{run_id}", timeout=10).json()["flow_id"]
    texts = {"posted-itself": f"nightly backup failed for ['odoo_core']: boom {ALERTED}",
             "did-not-post": "lock wait timed out"}
    runs = {name: fail(prefect, flow_id, name, f"OpsError: {text}") for name, text in texts.items()}
    _wait(lambda: any(runs["did-not-post"] in str(m) for m in mattermost.messages), 90,
          "the post for the run that did not post itself", lambda: f"; received: {mattermost.messages}")
    time.sleep(3)  # the events are evaluated in order: the first one's post would be there by now
    assert not any(runs["posted-itself"] in str(m) for m in mattermost.messages)


def test_a_frequent_run_that_keeps_failing_posts_once_per_window_each_stack_and_other_flows_every_time(
        alerting, mattermost):
    """A health sweep that cannot start (its stack file gone) fails every minute: posted once per run name (one
    stack's sweep) and window, not every minute; another stack's sweep and a backup's every failure still are.
    Crashed counts as Failed does (a sweep's process killed)."""
    prefect, _env, _setups, flows = alerting
    mattermost.clear()

    def posted(run: str) -> bool:
        return any(run in str(m) for m in mattermost.messages)

    def wait_posted(run: str, what: str) -> None:
        _wait(lambda: posted(run), 90, f"the post for {what}", lambda: f"; received: {mattermost.messages}")

    gone = "ConfigError: stack file /etc/odoo-stack-ops/stacks.yaml does not exist"
    started = time.monotonic()
    minutes = [fail(prefect, flows["health-sweep"], "health-sweep-prod", gone) for _ in range(2)]  # two minutes' runs
    assert time.monotonic() - started < REPEAT_S / 2  # both in one window (else the test proves nothing)
    shipping = fail(prefect, flows["log-shipping"], "log-shipping-prod", gone)
    other = fail(prefect, flows["health-sweep"], "health-sweep-staging", "exit code -9", crashed=True)  # OOM-killed
    nightly = [fail(prefect, flows["backup"], "nightly-prod", "OpsError: lock wait timed out") for _ in range(2)]
    for run, what in [(shipping, "prod's log shipping"), (other, "staging's sweep"), *((n, "a nightly") for n in nightly)]:
        wait_posted(run, what)
    _wait(lambda: any(map(posted, minutes)), 90, "the post for prod's failing sweep")
    time.sleep(3)  # the events are evaluated as they come: a second post would be there by now
    assert sum(map(posted, minutes)) == 1
    text = next(m["text"] for m in mattermost.messages if any(run in str(m) for run in minutes))
    assert "health-sweep-prod" in text and "does not exist" in text and f"next {REPEAT_S} s are not posted" in text

    time.sleep(max(0.0, REPEAT_S + 2 - (time.monotonic() - started)))
    later = fail(prefect, flows["health-sweep"], "health-sweep-prod", "exit code 1", crashed=True)  # after the window
    wait_posted(later, "prod's sweep still failing after the window")


def test_runs_of_a_frequent_deployment_that_never_start_post_once_per_window_each_deployment(alerting, mattermost):
    """A sweep whose runs never start (the worker cannot launch them; the flow no longer imports after an update)
    keeps Prefect's random run names, which the once-per-run-name window cannot count: every minute's run of every
    stack was posted. They are counted per deployment; another stack's deployment still posts."""
    prefect, _env, _setups, flows = alerting
    mattermost.clear()
    deployments = {stack: prefect.http.post(f"{prefect.api}/deployments/", json={
        "name": f"every-minute-{stack}", "flow_id": flows["health-sweep"]}, timeout=10).json()["id"]
        for stack in ("prod", "staging")}

    def posted(run: str) -> bool:
        return any(run in str(m) for m in mattermost.messages)

    why = "ModuleNotFoundError: No module named 'flows'"
    started = time.monotonic()
    prod = [fail(prefect, flows["health-sweep"], None, why, crashed=True, deployment=deployments["prod"])
            for _ in range(2)]
    assert time.monotonic() - started < REPEAT_S / 2  # both in one window (else the test proves nothing)
    staging = fail(prefect, flows["health-sweep"], None, why, crashed=True, deployment=deployments["staging"])
    _wait(lambda: posted(staging), 90, "the post for staging's runs", lambda: f"; received: {mattermost.messages}")
    _wait(lambda: any(map(posted, prod)), 90, "the post for prod's runs", lambda: f"; received: {mattermost.messages}")
    time.sleep(3)  # the events are evaluated as they come: a second post would be there by now
    assert sum(map(posted, prod)) == 1
    text = next(m["text"] for m in mattermost.messages if any(run in str(m) for run in prod))
    assert "never started" in text and "every-minute-prod" in text and "No module named" in text, text
