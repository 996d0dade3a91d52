"""The demo a newcomer trusts: the sandbox it starts is all green, and `--keep` stops everything it started on
SIGTERM (what a background job, a service manager or a closed terminal sends; SIGINT is ignored there)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_fresh_sandbox_sweep_is_all_green(prefect_harness, tmp_path):
    from flows.health import health_sweep
    from odoo_stack_ops.sandbox.stack import SandboxStack

    sandbox = SandboxStack(tmp_path / "sandbox")
    try:
        stack_file = sandbox.start()
        out = health_sweep(stack_file=str(stack_file))
    finally:
        sandbox.stop()
    rows = {r["check"]: r for r in out["results"]}
    services = ("odoo-core", "nginx-proxy", "n8n", "mattermost")
    assert {f"http.{s}" for s in services} | {f"container.{s}" for s in services} <= set(rows)
    assert {n: (r["status"], r["value"]) for n, r in rows.items() if r["status"] != "ok"} == {}
    assert out["notices"] == []
