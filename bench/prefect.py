"""Prefect overhead bench: `prefect deployment run NAME --watch` until Completed, through a real Prefect
server, `prefect deploy --all` of prefect.yaml and one process worker (as the README deploys them), for an
empty flow (the overhead alone) and for backup/nightly on the sandbox, alternately, on the same worker.

Each run's state history says where the time went: the CLI until the run exists, the worker's poll until
it picks the run up (Pending), the flow-run process start (interpreter, imports, loading the flow) until
Running, the flow itself until Completed, and the CLI noticing. `python -m bench prefect` writes
bench/results/prefect.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect, bytecode_missing

TARGET_S = 15.0
DEPLOY_EMPTY = """
import yaml
from prefect.flows import Flow
pool = yaml.safe_load(open("prefect.yaml"))["definitions"]["work_pool"]  # the same job variables as the flows
flow = Flow.from_source(source={project!r}, entrypoint="bench/empty_flow.py:empty")
flow.deploy(name="empty", work_pool_name=pool["name"], job_variables=pool["job_variables"], print_next_steps=False)
# the same without prefect.yaml's `command`: Prefect's default start (workspace supervisor, then the engine)
flow.deploy(name="default-start", work_pool_name=pool["name"],
            job_variables={{k: v for k, v in pool["job_variables"].items() if k != "command"}}, print_next_steps=False)
# the same with no compiled bytecode to read (an empty cache folder): what a venv synced without
# --compile-bytecode costs where Python may not write it (PYTHONDONTWRITEBYTECODE, a root-owned venv)
flow.deploy(name="no-bytecode", work_pool_name=pool["name"], print_next_steps=False, job_variables={{
    **pool["job_variables"], "env": {{**pool["job_variables"]["env"], **{no_bytecode!r}}}}})
"""


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def phases(api: str, run_id: str, started: float, ended: float) -> dict[str, float]:
    """Seconds spent in each leg of one run, from the server's state history (wall-clock stamps)."""
    run = requests.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    states = requests.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10).json()
    first = {}
    for s in sorted(states, key=lambda s: s["timestamp"]):
        first.setdefault(s["type"], _ts(s["timestamp"]))
    created = _ts(run["created"])
    return {"cli_to_created_s": round(created - started, 2),
            "created_to_pending_s": round(first["PENDING"] - created, 2),
            "pending_to_running_s": round(first["RUNNING"] - first["PENDING"], 2),
            "running_to_completed_s": round(first["COMPLETED"] - first["RUNNING"], 2),
            "completed_to_cli_exit_s": round(ended - first["COMPLETED"], 2)}


def no_bytecode_env(cache: Path) -> dict[str, str]:
    """Python looks for bytecode in `cache` and writes none; `cache` holds the standard library's only (linked from
    its __pycache__ folders), so every installed package is compiled from source, as in an environment synced
    without --compile-bytecode where Python may not write bytecode."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tag = sys.implementation.cache_tag
    for pyc in stdlib.rglob(f"__pycache__/*.{tag}.pyc"):
        if "site-packages" not in pyc.parts:
            link = cache / str(pyc.parent.parent).lstrip("/") / pyc.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(pyc)
    return {"PYTHONPYCACHEPREFIX": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}


def run_once(prefect: LocalPrefect, name: str, env: dict[str, str]) -> dict[str, Any]:
    started, t = time.time(), time.monotonic()
    out = prefect.cli("deployment", "run", name, "--watch", "--watch-timeout", "900", extra_env=env, timeout=1000)
    took, ended = time.monotonic() - t, time.time()
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]
    return {"s": round(took, 2), **phases(prefect.api, run_id, started, ended)}


def _import_s(module: str) -> float:
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PROJECT, check=True)
    return round(time.monotonic() - t, 2)


def run(repeat: int = 3) -> dict[str, Any]:
    """Measure and print; returns the figures (written by `python -m bench prefect`)."""
    from odoo_stack_ops.sandbox.stack import SandboxStack

    work = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    sandbox = SandboxStack(work / "sandbox")
    prefect = LocalPrefect(work / "prefect")
    runs: dict[str, list[dict[str, Any]]] = {"empty/empty": [], "empty/default-start": [], "empty/no-bytecode": [],
                                             "backup/nightly": []}
    no_bytecode = no_bytecode_env(work / "empty-pycache")
    try:
        stack_file = sandbox.start()
        env = {"STACK_OPS_FILE": str(stack_file), "MATTERMOST_WEBHOOK_URL": sandbox.mattermost.url}
        prefect.start(timeout=300)  # ~20 s on a quiet machine; minutes when it is shared
        prefect.python("-m", "deployments.setup", extra_env=env)
        prefect.cli("--no-prompt", "deploy", "--all", extra_env=env)
        prefect.python("-c", DEPLOY_EMPTY.format(project=str(PROJECT), no_bytecode=no_bytecode), extra_env=env)
        prefect.start_worker("ops-process", env)
        for i in range(repeat):
            for name, done in runs.items():
                cli_env = {**env, **no_bytecode} if name == "empty/no-bytecode" else env  # the CLI's start too
                done.append(run_once(prefect, name, cli_env))
                print(f"run {i + 1} {name}: {done[-1]}")
    finally:
        prefect.stop()
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    imports = {"python_s": _import_s("sys"), "prefect_s": _import_s("prefect"),
               "prefect_engine_s": _import_s("prefect.engine"), "flows_backup_s": _import_s("flows.backup")}

    def median(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in runs[name]), 2)

    legs = [k for k in runs["empty/empty"][0] if k != "s"]
    result = {
        "deployment_overhead_s": median("empty/empty", "s"), "target_s": TARGET_S,
        "backup_nightly_s": median("backup/nightly", "s"),
        # the same empty flow without prefect.yaml's `command` (Prefect 3.9's default: two interpreters per run)
        "deployment_overhead_default_start_s": median("empty/default-start", "s"),
        "default_start_legs_s": {k: median("empty/default-start", k) for k in legs},
        # the same empty flow with every module compiled from source (CLI and flow-run process): how it was
        # measured before ./ops synced with --compile-bytecode on this test bed (PYTHONDONTWRITEBYTECODE=1)
        "deployment_overhead_no_bytecode_s": median("empty/no-bytecode", "s"),
        "no_bytecode_legs_s": {k: median("empty/no-bytecode", k) for k in legs},
        "bytecode_missing": bytecode_missing(),
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
        "empty_legs_s": {k: median("empty/empty", k) for k in legs},
        "backup_legs_s": {k: median("backup/nightly", k) for k in legs},
        "first_run_s": {"empty": runs["empty/empty"][0]["s"], "backup": runs["backup/nightly"][0]["s"]},
        "import_s": imports,
        "worker_env": {k: prefect.env()[k] for k in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_WORKER_PREFETCH_SECONDS")},
        "repeat": repeat, "runs": runs, "load_avg_1m": round(os.getloadavg()[0], 1),
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    print(json.dumps({k: result[k] for k in ("deployment_overhead_s", "deployment_overhead_default_start_s",
                                             "deployment_overhead_no_bytecode_s", "backup_nightly_s", "empty_legs_s",
                                             "default_start_legs_s", "no_bytecode_legs_s",
                                             "backup_legs_s", "first_run_s", "import_s")}, indent=2))
    return result


if __name__ == "__main__":
    out = run()
    (Path(__file__).parent / "results" / "prefect.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
