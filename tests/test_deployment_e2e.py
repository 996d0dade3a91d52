"""End to end as an operator runs it: a real Prefect server, `prefect deploy --all`, a process worker,
`prefect deployment run backup/nightly`, Completed against the test bed, with its artifact."""

from __future__ import annotations

import json
import re
import time

import pytest

from odoo_stack_ops.prefect_local import LocalPrefect

pytestmark = pytest.mark.integration


def test_prefect_deployment_run_backup_nightly(stack_file, mattermost, tmp_path):
    prefect = LocalPrefect(tmp_path / "prefect")
    env = {"STACK_OPS_FILE": stack_file, "MATTERMOST_WEBHOOK_URL": mattermost.url}
    try:
        prefect.start()
        setup = prefect.python("-m", "deployments.setup", extra_env=env)
        assert "ops-process" in setup and "failure automation: created" in setup
        prefect.cli("--no-prompt", "deploy", "--all", extra_env=env)
        listed = prefect.cli("deployment", "ls")
        assert "backup/nightly" in listed and "restore/on-demand" in listed
        prefect.start_worker("ops-process", env)
        start = time.monotonic()
        out = prefect.cli("deployment", "run", "backup/nightly", "--watch", "--watch-timeout", "600",
                          extra_env=env, timeout=700)
        elapsed = time.monotonic() - start
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        run = prefect.http.get(f"{prefect.api}/flow_runs/{run_id}", timeout=10).json()
        assert run["state"]["type"] == "COMPLETED", run["state"]
        arts = prefect.http.post(f"{prefect.api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["backup-nightly"]}}},
                             timeout=10).json()
        assert arts and "verified" in arts[0]["data"]
        autos = prefect.http.post(f"{prefect.api}/automations/filter", json={}, timeout=10).json()
        assert any(a["name"].startswith("odoo-stack-ops") for a in autos)
        deployment = prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly", timeout=10).json()
        assert deployment["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
        assert deployment["schedules"][0]["schedule"]["timezone"] == "Asia/Singapore"
        (tmp_path / "timing.json").write_text(json.dumps({"run_to_completed_s": elapsed}))
        print(f"prefect deployment run backup/nightly -> Completed in {elapsed:.1f} s")
    finally:
        prefect.stop()
