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


def test_failed_deployment_run_posts_to_mattermost_with_its_link(mattermost, tmp_path):
    prefect = LocalPrefect(tmp_path / "prefect")
    # the run fails the way a broken worker set-up does: its stack file is missing
    env = {"STACK_OPS_FILE": str(tmp_path / "missing-stack.yaml"), "MATTERMOST_WEBHOOK_URL": mattermost.url}
    mattermost.clear()
    try:
        prefect.start(timeout=240)  # a loaded 2-core CI machine has been seen to need more than 90 s
        assert "failure automation: created" in prefect.python("-m", "deployments.setup", extra_env=env)
        # run again (as after an upgrade of this project): the one automation is brought up to date, not doubled
        assert "failure automation: updated" in prefect.python("-m", "deployments.setup", extra_env=env)
        autos = prefect.http.post(f"{prefect.api}/automations/filter", json={}, timeout=10).json()
        assert sorted(a["name"] for a in autos) == ["odoo-stack-ops: crash runs whose heartbeat stopped",
                                                     "odoo-stack-ops: failed run to Mattermost"]
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
        runs = {name: prefect.http.post(f"{prefect.api}/flow_runs/", json={"flow_id": flow_id, "name": name},
                                        timeout=10).json()["id"] for name in texts}
        for name, text in texts.items():
            failed = {"type": "FAILED", "name": "Failed", "message": f"Flow run encountered an exception: OpsError: {text}"}
            assert prefect.http.post(f"{prefect.api}/flow_runs/{runs[name]}/set_state",
                                     json={"state": failed, "force": True}, timeout=10).json()["status"] == "ACCEPT"
        _wait(lambda: any(runs["did-not-post"] in str(m) for m in mattermost.messages), 90,
              "the post for the run that did not post itself", lambda: f"; received: {mattermost.messages}")
        time.sleep(3)  # the events are evaluated in order: the first one's post would be there by now
        assert not any(runs["posted-itself"] in str(m) for m in mattermost.messages)
    finally:
        prefect.stop()
