"""Fleet bench: N small stacks' nightly backups through Prefect's own scale-out (a server, the `ops-process`
pool, several process workers) against the same backups one after another in one process.

The stacks share what a fleet shares: one PostgreSQL cluster (TLS, each stack its own small database,
`odoo_data.populate(partners=20, extra_tables=3)`), one S3 endpoint (each its own prefix), one podman service
and one sshd (the droplet). The inventory goes through `deployments.setup` and `prefect deploy` like an
operator's; each `backup/nightly-<stack>` gets one run, all created at once.

    python -m bench fleet [--stacks 20] [--workers 2] [--limit 2] [--query-seconds 2] [--max-parallel-dumps 2] [--repeat 3]
                          [--fleet-parallel 4] [--server-sqlite 0]

Figures (definitions also in the JSON's `definitions`):
- wall_s: the first run's creation to the last run's end, both as the server records them; the fleet is run
  `repeat` times (the first round is each stack's first night, the later ones are later nights, as the serial loop's
  are), each round followed by its serial loop; the round of median efficiency is reported, every round in `rounds`;
- serial_s: the same backups, `flows.backup.backup(stack_file=inv, stack=name)` in a loop in one process
  against the same server (imports excluded: done once before the loop; a run's environment from prefect.yaml;
  the workers stopped), measured right after the round's fleet, since this shared machine's speed drifts;
- efficiency: serial_s / (wall_s x cores used), cores used = min(os.cpu_count(), workers x limit);
- per_run_overhead_s: median over the fleet's runs of (end - Pending) - Running time: what the process worker
  adds to a flow (a process per run, its imports, the engine loading the flow, reporting the end);
  single_run_overhead_s adds the worker's polling: one run on the idle pool, creation → end minus Running;
- server_rss_mb: peak RSS (VmHWM) summed over the Prefect server's processes. The server keeps its state in
  PostgreSQL (a `prefect` database in the stacks' cluster), as the README sets up a server for many stacks;
  `--server-sqlite 1` measures it on SQLite, as before 2026-12-01 (SQLITE_SERVER_2026_12_01 below);
- the pool's runs start warm (forked from a zygote, odoo_stack_ops/warm_start.py); cold_engine: the same fleet
  again with each run a cold `python -m prefect.engine` (the pool's command before), in the same bench run;
- fleet_flow: the same stacks through one run of `backup/fleet` (every stack's nightly as a subflow, at most
  `fleet_parallel` at once, in one process on the same pool), in each round before its serial loop: its wall_s,
  efficiency and per_run_overhead_s, defined as above with the run's one process start shared by all its stacks.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg
import yaml

from deployments import stacks as deployed
from odoo_stack_ops import inventory, warm_start
from odoo_stack_ops.prefect_local import PROJECT, LocalPrefect, api_session, bytecode_missing, prefect_bin, stop_group
from odoo_stack_ops.sandbox import odoo_data
from odoo_stack_ops.sandbox.images import build_image, start_stack, write_files
from odoo_stack_ops.sandbox.podman import PodmanService
from odoo_stack_ops.sandbox.postgres import PgCluster
from odoo_stack_ops.sandbox.s3 import S3Server
from odoo_stack_ops.sandbox.sshd import SshServer
from odoo_stack_ops.sandbox.stack import stack_tree

TARGET_EFFICIENCY = 0.8
TARGET_OVERHEAD_S = 5.0
# The figures measured with the server on SQLite (its default), before the bench moved the server to PostgreSQL:
# SQLite serialises the server's writes, and a fleet's runs write at once (measured here: a subflow's creation
# waited up to 7 s behind the others' writes). Kept beside the new figures (issue 16 item 7).
SQLITE_SERVER_2026_12_01 = {
    "server_database": "sqlite", "stacks": 20, "workers": 2, "worker_limit": 2, "wall_s": 119.82,
    "serial_s": 75.76, "efficiency": 0.316, "per_run_overhead_s": 12.86, "single_run_overhead_s": 5.0,
    "server_rss_mb": 307.7, "import_baseline": {"cpu_s": 3.25, "wall_s": 3.58},
    "note": "measured 2026-12-01 at load 1.1-5.5, before ./ops compiled bytecode (PYTHONDONTWRITEBYTECODE=1 on "
            "this test bed: every run compiled Prefect from source)",
}
# The per-deployment figures before warm starts (each run a cold `python -m prefect.engine`), measured 2026-12-01
# at load 0.6-4.0; the same run now measures the cold engine again beside the warm one (`cold_engine`).
COLD_ENGINE_2026_12_01 = {"wall_s": 61.41, "serial_s": 63.08, "efficiency": 0.514, "per_run_overhead_s": 4.92,
                          "single_run_overhead_s": 2.19}
# Before one boto3 session per process (each S3 client parsed botocore's S3 model again): the same bench, 2026-12-01,
# load 0.5-4.3. The serial loop got faster with it, so efficiency (relative to it) dropped: kept beside.
BEFORE_ONE_SESSION_2026_12_01 = {"serial_s": 64.0, "wall_s": 54.7, "efficiency": 0.58, "per_run_overhead_s": 1.75,
                                 "cold_engine": {"wall_s": 61.3, "efficiency": 0.52, "per_run_overhead_s": 4.87},
                                 "fleet_flow": {"wall_s": 38.9, "efficiency": 0.82, "per_run_overhead_s": 0.11}}
# Before the bench's own wait read the runs with one filter request every 2 s: it read each run once a second (20
# requests a second to the server under test, none in the serial phase), measured 2026-12-01 at load 0.9-2.6
# (the fifth session's run). Kept beside: the observer's load was in wall_s and in the server's CPU.
BEFORE_ONE_POLL_2026_12_01 = {"serial_s": 42.48, "wall_s": 40.9, "efficiency": 0.519, "per_run_overhead_s": 1.31,
                              "cpu_s_server": 21.5, "cpu_s_machine": 72.4,
                              "cold_engine": {"wall_s": 62.27, "efficiency": 0.341, "per_run_overhead_s": 5.17},
                              "fleet_flow": {"wall_s": 24.76, "efficiency": 0.858, "per_run_overhead_s": 0.12}}
# The same bench with the workers polling every second (--query-seconds 1), 2026-12-01, load 1.1-3.8: cores_filled
# 0.931, within the 0.79-0.93 of this day's runs at 2 s, while the machine did more (cpu_ratio 0.615; the server's
# idle polling cost 4.32 CPU-s a minute): no better. Kept beside.
QUERY_1S_2026_12_01 = {"worker_query_seconds": 1, "wall_s": 35.4, "serial_s": 43.4, "efficiency": 0.614,
                       "rounds_wall_s": [41.8, 35.4, 33.38], "per_run_overhead_s": 1.78, "cores_filled": 0.931,
                       "cpu_ratio_serial_to_phase": 0.615,
                       "idle_polling_cpu_s_per_min": {"machine": 6.24, "server": 4.32, "workers": 0.33}}
# Before each round had its own serial loop (one serial loop after all rounds, every round compared with it) and
# before runs skipped the version check and CSRF-token requests: the seventh session's committed figures, load
# 0.9-2.9. Kept beside: the baseline's measurement changed (and this machine's speed moved 2x between runs since).
SERIAL_ONCE_2026_12_01 = {"wall_s": 39.63, "serial_s": 47.97, "efficiency": 0.605, "per_run_overhead_s": 1.57,
                          "rounds_wall_s": [41.91, 39.63, 34.33], "rounds_efficiency": [0.572, 0.605, 0.699],
                          "cpu_ratio_serial_to_phase": 0.718, "cores_filled": 0.91,
                          "server_requests_per_run": {"fleet": 46.4, "serial": 22.4},
                          "fleet_flow": {"wall_s": 29.1, "efficiency": 0.824},
                          "cold_engine": {"wall_s": 65.2, "efficiency": 0.368}}
COLD_COMMAND = "python -m prefect.engine"
IDLE_WINDOW_S = 20.0
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
BUCKET = "fleet-backups"
COMPOSE_PROJECT = "fleet"
FILES_PER_STACK = 5

SERIAL = r"""
import importlib, json, sys, time
module, function = sys.argv[1].split(":")
one = getattr(importlib.import_module(module), function)
inventory, names = sys.argv[2], sys.argv[3:]
seconds = {}
for name in names:
    started = time.monotonic()
    one(stack_file=inventory, stack=name)
    seconds[name] = time.monotonic() - started
print("FLEET-SERIAL " + json.dumps(seconds))
"""

HTTP = api_session()  # the API's 503s (a busy server) retried, as Prefect's client does


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def session_hwm_mb(sid: int) -> dict[str, float]:
    """Peak RSS (VmHWM, MB) of every live process in the session `sid` (the server and its uvicorn child)."""
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError, StopIteration):
            if session_of(int(proc.name)) != sid:
                continue
            hwm = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmHWM:"))
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            out[f"{proc.name} {cmd[:80]}"] = round(int(hwm.split()[1]) / 1024, 1)
    return out


TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat): every process of the test bed."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICK  # minus idle and iowait


def settle(max_s: float = 60.0, below: float = 0.25) -> float:
    """Wait until the machine is quiet (busy under `below` cores over 2 s), so that a phase's tail (the server's
    event backlog, PostgreSQL's writes) is not measured in the next phase; the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < max_s:
        busy = machine_busy_s()
        time.sleep(2.0)
        if (machine_busy_s() - busy) / 2.0 < below:
            break
    return round(time.monotonic() - started, 1)


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: state ppid pgrp session ... utime stime cutime cstime ...; [] once
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process; (0, 0) once it is gone."""
    f = stat_fields(pid)
    return ((int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK) if f else (0.0, 0.0)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runs_exited(parents: set[str], max_s: float = 30.0) -> None:
    """Wait until no run process is left (a child of a worker or zygote): a run is Completed before its process has
    flushed its last logs and events and exited, and the CPU of a process not yet reaped would fall in `other`."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and any(
            (f := stat_fields(int(p.name))) and f[1] in parents for p in Path("/proc").iterdir() if p.name.isdigit()):
        time.sleep(0.1)


def cpu_snapshot(workers: list[int], server: int) -> dict[str, float]:
    """Where the machine's CPU went so far, once the runs' processes have exited: the flow-run processes reaped by a
    worker or by the warm-start zygote, the workers themselves, the Prefect server (and its children), and the
    machine as a whole."""
    zygotes = warm_start.zygote_pids()
    parents = {*map(str, workers), *map(str, zygotes)}
    runs_exited(parents)
    own = [proc_cpu_s(pid) for pid in workers]
    runs = [proc_cpu_s(pid)[1] for pid in zygotes]
    server_cpu = 0.0
    for p in Path("/proc").iterdir():  # one pass: runs still exiting (a worker's or zygote's live children), server
        f = stat_fields(int(p.name)) if p.name.isdigit() else []
        if f and (f[1] in parents or f[3] == str(server)):
            cpu = (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK
            runs += [(int(f[13]) + int(f[14])) / TICK] if f[1] in parents else []
            server_cpu += cpu if f[3] == str(server) else 0.0
    return {"machine": machine_busy_s(), "runs": sum(c for _, c in own) + sum(runs),
            "workers": sum(o for o, _ in own), "server": server_cpu}


def session_of(pid: int) -> int:
    f = stat_fields(pid)
    return int(f[3]) if f else -1


ACCESS_LINE = re.compile(r'^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| INFO +\| uvicorn\.access - \S+ - "(\w+) (\S+) HTTP')
ID_IN_PATH = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=/name/)[^/]+(/[^/]+)?|"
                        r"(?<=/v2/concurrency_limits/)(?!increment|decrement|leases|filter)[^/]+")


def access_log(log: Path) -> list[tuple[float, str]]:
    """The server's access log as (second of its day, to the millisecond; "METHOD /path" with ids and names as
    {id}) pairs."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if m := ACCESS_LINE.match(line):
            at = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000
            path = ID_IN_PATH.sub(lambda x: "/{id}" if x[0].startswith("/") else "{id}", m[6].split("?")[0])
            out.append((at, f"{m[5]} {path}"))
    return out


def server_requests(requests: list[tuple[float, str]], window: tuple[float, float], runs: int,
                    top: int = 10) -> dict[str, Any]:
    """The API requests the server answered in a phase, per run and by endpoint: where its per-run CPU goes."""
    def day_s(t: float) -> float:
        lt = time.localtime(t)
        return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + t % 1

    start, end = (day_s(t) for t in window)
    counts = collections.Counter(key for at, key in requests  # a phase may cross midnight
                                 if ((start <= at <= end) if start <= end else (at >= start or at <= end)))
    return {"per_run": round(sum(counts.values()) / runs, 1),
            "by_endpoint_per_run": {k: round(v / runs, 2) for k, v in counts.most_common(top)}}


def cpu_delta(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    d = {k: round(after[k] - before[k], 1) for k in before}
    d["other"] = round(d["machine"] - d["runs"] - d["workers"] - d["server"], 1)  # PostgreSQL, S3, sshd, podman...
    d["runs_per_run"] = round(d["runs"] / runs, 2)
    return d


def zygote_rss_mb() -> dict[str, float]:
    """RSS and peak RSS (MB) of the live warm-start zygotes (odoo_stack_ops/warm_start.py): the memory warm starts cost."""
    out: dict[str, float] = {}
    for pid in warm_start.zygote_pids():
        with contextlib.suppress(OSError, KeyError, ValueError):
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":" in line)
            out = {k: round(int(status[f"Vm{k.split('_')[0]}"].split()[0]) / 1024, 1) for k in ("RSS_mb", "HWM_mb")}
    return out


def import_cost(env: dict[str, str]) -> dict[str, float]:
    """The raw floor of a process worker's per-run overhead: a fresh Python importing the engine and the flow."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import prefect.engine, flows.backup"], env=env, cwd=PROJECT, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.monotonic() - started, 2),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)}


def start_up_logs(api: str, run_id: str, lines: int = 25) -> list[str]:
    run = HTTP.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
    logs = HTTP.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                     "sort": "TIMESTAMP_ASC", "limit": lines}, timeout=30).json()
    states = HTTP.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
    events = [(ts(x["timestamp"]), x["message"].splitlines()[0][:100]) for x in logs]
    events += [(ts(x["timestamp"]), f"state {x['name']}") for x in states]
    return [f"{t - ts(run['created']):7.2f}  {m}" for t, m in sorted(events)][:lines]


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def make_stacks(pg: PgCluster, podman: PodmanService, containers: dict[str, Any], names: list[str]) -> None:
    """Each stack's own database (Odoo-like, small) and filestore folder in the shared odoo-core volume."""
    client = podman.client()
    try:
        odoo = client.containers.get(containers["odoo-core"]["container"])
        for i, name in enumerate(names):
            db = name.replace("-", "_")
            pg.createdb(db)
            files = odoo_data.make_filestore(FILES_PER_STACK, seed=i, nested_extra=False)
            with psycopg.connect(**pg.conninfo(db)) as conn:
                odoo_data.populate(conn, partners=20, extra_tables=3)
                odoo_data.register_attachments(conn, files)
            write_files(odoo, f"/var/lib/odoo/filestore/{db}", files)
    finally:
        client.close()


def write_inventory(path: Path, tree: dict[str, Any], names: list[str], max_parallel_dumps: int,
                    state: Path) -> tuple[str, str]:
    """The inventory (mode 0600) and the database password each stack reads from its own variable."""
    defaults = {k: v for k, v in tree.items() if k != "name"}
    password = defaults["database"].pop("password")
    defaults["database"]["max_parallel_dumps"] = max_parallel_dumps
    # a schedule that never fires while the bench runs: only the runs created here count
    defaults["backup"] = {**defaults["backup"], "schedule_cron": "0 3 1 1 *", "verify_sample": 5}
    entries = {n: {"database": {"name": n.replace("-", "_"), "databases": [n.replace("-", "_")]},
                   "backup": {"databases": [n.replace("-", "_")]}, "spaces": {"prefix": n},
                   "state_dir": str(state / n)} for n in names}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump({"defaults": defaults, "stacks": entries}, fh, sort_keys=False)
    return str(path), password


def wait_runs(api: str, runs: list[str], timeout: float, every_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """The runs once all have ended. One filter request per poll, as a dashboard's list would: the observer must not
    load the server it measures (until 2026-12-01 this read each run once a second, 20 requests a second on a
    20-stack fleet; wall_s is from the server's timestamps, so the poll's pace is not in it)."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(every_s)
        listed = HTTP.post(f"{api}/flow_runs/filter", json={"flow_runs": {"id": {"any_": runs}}, "limit": len(runs)},
                           timeout=30).json()
        got = {g["id"]: g for g in listed}
        if len(got) == len(runs) and all(g["state"]["type"] in TERMINAL for g in got.values()):
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished after {timeout:.0f} s: "
                               f"{sorted(g['state']['type'] for g in got.values())}")


def timeline(api: str, run: dict[str, Any]) -> dict[str, float]:
    """One finished run's times (s): queued (created → Pending), start-up (Pending → Running), running, and
    the overhead = (end - Pending) - Running."""
    states = HTTP.get(f"{api}/flow_run_states/", params={"flow_run_id": run["id"]}, timeout=30).json()
    pending = min(ts(s["timestamp"]) for s in states if s["type"] == "PENDING")
    running = min(ts(s["timestamp"]) for s in states if s["type"] == "RUNNING")
    end = ts(run["end_time"])
    return {"queued_s": pending - ts(run["created"]), "startup_s": running - pending,
            "running_s": run["total_run_time"], "overhead_s": (end - pending) - run["total_run_time"],
            "created": ts(run["created"]), "end": end}


def create_runs(api: str, deployment_ids: list[str], job_variables: dict[str, Any] | None = None,
                parameters: dict[str, Any] | None = None) -> list[str]:
    """One run per deployment (a busy server's 503 is retried by HTTP, as by Prefect's client)."""
    body = {k: v for k, v in (("job_variables", job_variables), ("parameters", parameters)) if v}
    runs = []
    for d in deployment_ids:
        response = HTTP.post(f"{api}/deployments/{d}/create_flow_run", json=body, timeout=60)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"create_flow_run refused: {response.status_code} {response.text[:500]}")
        runs.append(response.json()["id"])
    return runs


def run_env() -> dict[str, str]:
    """The environment prefect.yaml gives each run of the ops-process pool: the serial loop runs with it too."""
    doc = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    return {k: str(v) for k, v in doc["definitions"]["work_pool"]["job_variables"]["env"].items()}


def serial_loop(prefect: LocalPrefect, flow: str, inv: str, names: list[str], env: dict[str, str],
                timeout: float) -> dict[str, float]:
    """`flow` ("module:function") for each stack, one after another in one process (with a run's environment):
    {stack: seconds}."""
    out = prefect.python("-c", SERIAL, flow, inv, *names, extra_env={**env, **run_env()}, timeout=timeout)
    return json.loads(next(line for line in out.splitlines() if line.startswith("FLEET-SERIAL "))[len("FLEET-SERIAL "):])


def span(lines: list[dict[str, float]]) -> float:
    """First run created → last run ended (server timestamps)."""
    return max(x["end"] for x in lines) - min(x["created"] for x in lines)


def median_of(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """The phase of median efficiency (the upper one of an even count)."""
    return sorted(phases, key=lambda p: p["efficiency"])[len(phases) // 2]


def med(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def fleet_flow_run(api: str, deployment_id: str, stacks: int, parallel: int, timeout: float) -> dict[str, Any]:
    """One `backup/fleet` run over every stack: its timeline, and each stack's subflow (created → end, Running)."""
    (run_id,) = create_runs(api, [deployment_id], parameters={"max_parallel": parallel})
    run = wait_runs(api, [run_id], timeout)[run_id]
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"fleet run ended {run['state']['type']}: {run['state'].get('message')}")
    children = HTTP.post(f"{api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {
        "operator": "and_", "any_": [run_id]}}, "limit": 200}, timeout=30).json()
    if len(children) != stacks or {c["state"]["type"] for c in children} != {"COMPLETED"}:
        raise RuntimeError(f"fleet run has {len(children)} subflows for {stacks} stacks: "
                           f"{sorted(c['state']['type'] for c in children)}")
    line = timeline(api, run)
    subflow_overhead = [ts(c["end_time"]) - ts(c["created"]) - c["total_run_time"] for c in children]
    return {**line, "subflow_overhead_s": med(subflow_overhead),
            "subflow_running_s": med([c["total_run_time"] for c in children]), "run_id": run_id}


def run(stacks: int = 20, workers: int = 2, limit: int = 2, query_seconds: float = 2, max_parallel_dumps: int = 2,
        fleet_parallel: int = 4, server_sqlite: int = 0, repeat: int = 3, timeout: float = 3600) -> dict[str, Any]:
    names = [f"fleet-{i:02d}" for i in range(stacks)]
    cores = min(os.cpu_count() or 1, workers * limit)
    flow_cores = min(os.cpu_count() or 1, fleet_parallel)
    load_before = loadavg()
    pg = sshd = podman = s3 = None
    prefect: LocalPrefect | None = None
    procs: list[subprocess.Popen[bytes]] = []

    def stop_workers() -> None:  # the serial loops run without them, as a single process would
        while procs:
            stop_group(procs.pop(), (signal.SIGINT, signal.SIGINT, signal.SIGTERM), waits=(1.5, 10, 10))

    with TemporaryDirectory(prefix="bench-fleet-") as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            started = time.monotonic()
            pg = PgCluster(tls=True).start()
            sshd = SshServer().start()
            podman = PodmanService().start()
            containers = start_stack(podman, build_image(podman), project=COMPOSE_PROJECT)
            s3 = S3Server().start()
            s3.create_bucket(BUCKET)
            make_stacks(pg, podman, containers, names)
            tree = stack_tree(pg=pg, sshd=sshd, podman=podman, containers=containers, s3=s3, bucket=BUCKET,
                              mattermost=None, state_dir=tmp / "state")
            tree["docker"]["compose_project"] = COMPOSE_PROJECT
            inv, password = write_inventory(tmp / "inventory.yaml", tree, names, max_parallel_dumps, tmp / "state")
            env = {"STACK_OPS_FILE": inv, **{inventory.env_prefix(n) + "DB_PASSWORD": password for n in names},
                   "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
                   "STACK_OPS_WARM_IDLE_S": "900"}  # one zygote through every phase, as on a worker host
            prefect = LocalPrefect(tmp / "prefect", server_env={  # its access log: the requests of each phase
                "PREFECT_SERVER_LOGGING_LEVEL": "INFO", **({} if server_sqlite else pg.prefect_server_env())})
            prefect.start(timeout=180)
            prefect.python("-m", "deployments.setup", extra_env=env, timeout=600)
            nightly, sweeps = [f"nightly-{n}" for n in names], [f"every-minute-{n}" for n in names]
            generated = PROJECT / deployed.GENERATED  # the sweeps' every-minute schedules off: the bench makes the runs
            doc = yaml.safe_load(generated.read_text())
            for d in doc["deployments"]:
                d["schedules"] = [] if d["name"] in sweeps else d.get("schedules", [])
            generated.write_text(yaml.safe_dump(doc, sort_keys=False))
            prefect.cli("--no-prompt", "deploy", "--prefect-file", deployed.GENERATED,  # `fleet`: both fleet runs
                        *[a for n in [*nightly, *sweeps, "fleet"] for a in ("--name", n)], extra_env=env, timeout=1800)
            ids = [prefect.http.get(f"{prefect.api}/deployments/name/backup/{n}", timeout=30).json()["id"] for n in nightly]
            fleet_id = prefect.http.get(f"{prefect.api}/deployments/name/backup/fleet", timeout=30).json()["id"]
            sweep_ids = [prefect.http.get(f"{prefect.api}/deployments/name/health-sweep/{n}", timeout=30).json()["id"]
                         for n in sweeps]
            sweep_fleet_id = prefect.http.get(f"{prefect.api}/deployments/name/health-sweep/fleet",
                                              timeout=30).json()["id"]
            setup_s = time.monotonic() - started
            print(f"{stacks} stacks set up and deployed in {setup_s:.0f} s; starting {workers} workers")

            def start_workers() -> None:
                for w in range(workers):
                    log = (tmp / f"worker-{w}.log").open("ab")
                    procs.append(subprocess.Popen(
                        [prefect_bin(), "worker", "start", "--pool", "ops-process", "--name", f"bench-{w}",
                         "--limit", str(limit)], env=prefect.env(env), cwd=PROJECT, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True))
                time.sleep(max(5.0, 2 * query_seconds))  # the workers registered and polling: not part of wall_s

            # a phase's CPU is a difference of two snapshots with the same workers (their reaped runs included)
            snap = lambda: cpu_snapshot([w.pid for w in procs], prefect.server.pid)  # noqa: E731
            start_workers()
            idle0, idle_t0 = snap(), time.monotonic()
            time.sleep(IDLE_WINDOW_S)  # what the workers' polling alone costs the server (and the workers)
            idle1, idle_s = snap(), time.monotonic() - idle_t0
            idle_polling = {k: round((idle1[k] - idle0[k]) / idle_s * 60, 2) for k in ("server", "workers", "machine")}

            # the fleet `repeat` times (the first is every stack's first night), each followed by the same backups in
            # the serial loop: the machine's speed drifts (2x within an hour on this shared one), so each round's
            # efficiency compares the two measured minutes apart. The median round is reported.
            rounds = []
            for i in range(repeat):
                if not procs:
                    start_workers()
                settled = [settle()]
                load0, cpu0, t0 = loadavg(), snap(), time.time()
                fleet = wait_runs(prefect.api, create_runs(prefect.api, ids), timeout)
                load1, cpu1, t1 = loadavg(), snap(), time.time()
                failed = {r["name"]: f"{r['state']['type']}: {r['state'].get('message')}"
                          for r in fleet.values() if r["state"]["type"] != "COMPLETED"}
                if failed:
                    worker_log = (tmp / "worker-0.log").read_text(errors="replace")[-4000:]
                    raise RuntimeError(f"fleet runs not Completed: {failed}\nworker-0.log:\n{worker_log}")
                lines = [timeline(prefect.api, r) for r in fleet.values()]
                wall = span(lines)
                # the same stacks again as subflows of one backup/fleet run, on the same pool
                settled.append(settle())
                load_f0, cpu_f0, flow_t0 = loadavg(), snap(), time.time()
                one_run = fleet_flow_run(prefect.api, fleet_id, stacks, fleet_parallel, timeout)
                load_f1, cpu_f1, flow_t1 = loadavg(), snap(), time.time()
                flow_wall = one_run["end"] - one_run["created"]
                stop_workers()
                settled.append(settle())
                load_s0, serial_t0, cpu_s0 = loadavg(), time.time(), {**snap(), "runs": children_cpu_s()}
                serial = serial_loop(prefect, "flows.backup:backup", inv, names, env, timeout)
                serial_sum = sum(serial.values())
                # the serial loop's process, reaped by the bench
                load_s1, serial_t1, cpu_s1 = loadavg(), time.time(), {**snap(), "runs": children_cpu_s()}
                rounds.append({"wall_s": wall, "lines": lines, "cpu": (cpu0, cpu1), "loadavg": (load0, load1),
                               "window": (t0, t1), "serial": serial, "serial_s": serial_sum,
                               "serial_cpu": (cpu_s0, cpu_s1), "serial_loadavg": (load_s0, load_s1),
                               "serial_window": (serial_t0, serial_t1),
                               "efficiency": serial_sum / (wall * cores), "settled_s": settled,
                               "flow": {"run": one_run, "wall_s": flow_wall, "cpu": (cpu_f0, cpu_f1),
                                        "loadavg": (load_f0, load_f1), "window": (flow_t0, flow_t1),
                                        "serial_s": serial_sum,
                                        "efficiency": serial_sum / (flow_wall * flow_cores)}})
                print(f"round {i + 1}: {stacks} runs Completed in {wall:.1f} s; one backup/fleet run {flow_wall:.1f} s; "
                      f"serial loop {serial_sum:.1f} s; efficiency {rounds[-1]['efficiency']:.2f} and "
                      f"{rounds[-1]['flow']['efficiency']:.2f}")
            median_round = median_of(rounds)
            wall_s, lines, serial_s = median_round["wall_s"], median_round["lines"], median_round["serial_s"]
            serial = median_round["serial"]
            serial_med = med([r["serial_s"] for r in rounds])  # the baseline for the phases after the rounds
            (cpu_fleet0, cpu_fleet1), (load_fleet, load_fleet_end) = median_round["cpu"], median_round["loadavg"]
            (cpu_serial0, cpu_serial1), (load_serial, load_serial_end) = (median_round["serial_cpu"],
                                                                         median_round["serial_loadavg"])
            median_flow = median_of([r["flow"] for r in rounds])
            one_run, flow_wall, flow_efficiency = median_flow["run"], median_flow["wall_s"], median_flow["efficiency"]
            (cpu_flow0, cpu_flow1), (load_fleet_flow, load_fleet_flow_end) = median_flow["cpu"], median_flow["loadavg"]
            flow_t0, flow_t1 = median_flow["window"]
            start_workers()
            zygote = zygote_rss_mb()
            # the same fleet again, each run a cold `python -m prefect.engine`: the baseline, in the same run
            load_cold, cpu_cold0 = loadavg(), snap()
            cold = wait_runs(prefect.api, create_runs(prefect.api, ids, {"command": COLD_COMMAND}), timeout)
            load_cold_end = loadavg()
            cpu_cold1 = snap()
            if any(r["state"]["type"] != "COMPLETED" for r in cold.values()):
                raise RuntimeError("cold fleet runs not Completed")
            cold_lines = [timeline(prefect.api, r) for r in cold.values()]
            cold_wall = span(cold_lines)
            print(f"fleet, cold engine: {stacks} runs Completed in {cold_wall:.1f} s")

            (single_id,) = create_runs(prefect.api, ids[:1])  # the idle pool: polling included
            single = wait_runs(prefect.api, [single_id], timeout)[single_id]
            if single["state"]["type"] != "COMPLETED":
                raise RuntimeError(f"single run ended {single['state']['type']}")
            single_wall = ts(single["end_time"]) - ts(single["created"])
            # the same run without prefect.yaml's `command`: Prefect's default workspace supervisor process
            (supervised_id,) = create_runs(prefect.api, ids[1:2], {"command": None})
            supervised = wait_runs(prefect.api, [supervised_id], timeout)[supervised_id]
            if supervised["state"]["type"] != "COMPLETED":
                raise RuntimeError(f"supervised run ended {supervised['state']['type']}")
            supervised_overhead = (ts(supervised["end_time"]) - ts(supervised["created"])
                                   - supervised["total_run_time"])
            # one minute's health sweeps of every stack: a run per stack, then one health-sweep/fleet run
            cpu_h0, health_t0 = snap(), time.time()
            per_stack = wait_runs(prefect.api, create_runs(prefect.api, sweep_ids), timeout)
            cpu_h1, health_t1 = snap(), time.time()
            sweep_fleet = wait_runs(prefect.api, create_runs(prefect.api, [sweep_fleet_id],
                                                             parameters={"max_parallel": fleet_parallel}), timeout)
            cpu_h2, health_t2 = snap(), time.time()
            if any(r["state"]["type"] != "COMPLETED" for r in [*per_stack.values(), *sweep_fleet.values()]):
                raise RuntimeError("health sweep runs not Completed: "
                                   f"{[r['state'].get('message') for r in [*per_stack.values(), *sweep_fleet.values()]]}")
            sweep_lines = [timeline(prefect.api, r) for r in per_stack.values()]
            (sweep_fleet_run,) = sweep_fleet.values()
            print(f"health sweeps: {stacks} runs in {span(sweep_lines):.1f} s, "
                  f"one fleet run in {ts(sweep_fleet_run['end_time']) - ts(sweep_fleet_run['created']):.1f} s")

            stop_workers()
            cpu_serial_h0, serial_h_t0 = {**snap(), "runs": children_cpu_s()}, time.time()
            serial_h = serial_loop(prefect, "flows.health:health_sweep", inv, names, env, timeout)
            cpu_serial_h = {**snap(), "runs": children_cpu_s()}
            serial_h_t1 = time.time()
            log = access_log(prefect.home / "server.log")
            requests_per_phase = {phase: server_requests(log, window, stacks) for phase, window in (
                ("fleet", median_round["window"]), ("fleet_flow", (flow_t0, flow_t1)),
                ("serial", median_round["serial_window"]), ("health_per_stack_runs", (health_t0, health_t1)),
                ("health_fleet_run", (health_t1, health_t2)), ("health_serial", (serial_h_t0, serial_h_t1)))}
            startup_log = start_up_logs(prefect.api, single_id)
            server_rss = session_hwm_mb(prefect.server.pid) if prefect.server else {}
            imports = import_cost(prefect.env(env))
        finally:
            stop_workers()
            if prefect is not None:
                prefect.stop()  # and this server's warm-start zygote
            if podman is not None and podman.proc is not None:
                with contextlib.suppress(Exception):
                    podman.podman("rm", "--all", "--force", "--time", "1", timeout=60)
            for part in (s3, podman, sshd, pg):
                if part is not None:
                    with contextlib.suppress(Exception):
                        part.stop()

    efficiency = median_round["efficiency"]
    overhead = med([x["overhead_s"] for x in lines])
    cold_efficiency = serial_med / (cold_wall * cores)
    cpu_breakdown = {"fleet": cpu_delta(cpu_fleet0, cpu_fleet1, stacks), "cold_engine": cpu_delta(cpu_cold0, cpu_cold1, stacks),
                     "fleet_flow": cpu_delta(cpu_flow0, cpu_flow1, stacks),
                     "serial": cpu_delta(cpu_serial0, cpu_serial1, stacks)}
    # efficiency = serial_s / serial CPU  x  serial CPU / fleet CPU  x  fleet CPU / (wall_s x cores)
    cpu_breakdown["efficiency_factors"] = {
        phase: {"serial_cores_busy": round(cpu_breakdown["serial"]["machine"] / serial_s, 2),
                "cpu_ratio_serial_to_phase": round(cpu_breakdown["serial"]["machine"] / cpu_breakdown[phase]["machine"], 3),
                "cores_filled": round(cpu_breakdown[phase]["machine"] / (w * cores), 3)}
        for phase, w in (("fleet", wall_s), ("cold_engine", cold_wall))}
    cold_overhead = med([x["overhead_s"] for x in cold_lines])
    health_cpu = {"per_stack_runs": cpu_delta(cpu_h0, cpu_h1, stacks), "fleet_run": cpu_delta(cpu_h1, cpu_h2, stacks),
                  "serial": cpu_delta(cpu_serial_h0, cpu_serial_h, stacks)}
    health = {
        "what": "one minute's health sweeps of every stack: each stack's health-sweep/every-minute-<stack> run at "
                "once; then ONE health-sweep/fleet run (max_parallel as fleet_flow); then the same sweeps in a loop "
                "in one process (flows.health.health_sweep)",
        "per_stack_runs": {"wall_s": round(span(sweep_lines), 2),
                           "per_run_overhead_s": med([x["overhead_s"] for x in sweep_lines]),
                           "sweep_running_median_s": med([x["running_s"] for x in sweep_lines])},
        "fleet_run": {"wall_s": round(ts(sweep_fleet_run["end_time"]) - ts(sweep_fleet_run["created"]), 2)},
        "serial": {"wall_s": round(sum(serial_h.values()), 2), "sweep_median_s": med(list(serial_h.values()))},
        "cpu_s": health_cpu,
        "machine_cpu_s_per_stack_sweep": {k: round(v["machine"] / stacks, 2) for k, v in health_cpu.items()},
    }
    # the run's one process start is shared by its stacks; each subflow adds its own orchestration
    flow_overhead = one_run["overhead_s"] / stacks + one_run["subflow_overhead_s"]
    result = {
        "stacks": stacks,
        "workers": workers,
        "worker_limit": limit,
        "worker_query_seconds": query_seconds,
        "server_database": "sqlite" if server_sqlite else "postgresql",
        "sqlite_server_2026_12_01": SQLITE_SERVER_2026_12_01,
        "max_parallel_dumps": max_parallel_dumps,
        "cpu_count": os.cpu_count(),
        "cores_used": cores,
        "wall_s": round(wall_s, 2),
        "idle_polling_cpu_s_per_min": idle_polling,
        "rounds": [{"wall_s": round(r["wall_s"], 2), "serial_s": round(r["serial_s"], 2),
                    "efficiency": round(r["efficiency"], 3),
                    "serial_loadavg": {"start": r["serial_loadavg"][0], "end": r["serial_loadavg"][1]},
                    "settled_s": r["settled_s"],
                    "per_run_overhead_s": med([x["overhead_s"] for x in r["lines"]]),
                    "cpu_s_machine": round(r["cpu"][1]["machine"] - r["cpu"][0]["machine"], 1),
                    "loadavg": {"start": r["loadavg"][0], "end": r["loadavg"][1]}} for r in rounds],
        "serial_s": round(serial_s, 2),
        "serial_median_s": round(serial_med, 2),
        "efficiency": round(efficiency, 3),
        "per_run_overhead_s": overhead,
        "single_run_overhead_s": round(single_wall - single["total_run_time"], 2),
        "single_run_wall_s": round(single_wall, 2),
        "single_run_overhead_default_command_s": round(supervised_overhead, 2),
        "engine_command": "python -m odoo_stack_ops.warm_start (prefect.yaml, ops-process pool: runs forked from a zygote)",
        "zygote_rss_mb": zygote,
        "cpu_s": cpu_breakdown,
        "server_requests": requests_per_phase,
        "health": health,
        "cold_engine": {"command": COLD_COMMAND, "wall_s": round(cold_wall, 2), "efficiency": round(cold_efficiency, 3),
                        "per_run_overhead_s": cold_overhead, "wall_ratio_warm_to_cold": round(wall_s / cold_wall, 3),
                        "loadavg": {"start": load_cold, "end": load_cold_end}},
        "cold_engine_2026_12_01": COLD_ENGINE_2026_12_01,
        "before_one_session_2026_12_01": BEFORE_ONE_SESSION_2026_12_01,
        "before_one_poll_2026_12_01": BEFORE_ONE_POLL_2026_12_01,
        "query_1s_2026_12_01": QUERY_1S_2026_12_01,
        "serial_once_2026_12_01": SERIAL_ONCE_2026_12_01,
        "server_rss_mb": round(sum(server_rss.values()), 1),
        "fleet_flow": {
            "deployment": "backup/fleet", "max_parallel": fleet_parallel, "cores_used": flow_cores,
            "wall_s": round(flow_wall, 2),
            "efficiency": round(flow_efficiency, 3),
            "serial_s": round(median_flow["serial_s"], 2),
            "rounds": [{"wall_s": round(r["flow"]["wall_s"], 2), "efficiency": round(r["flow"]["efficiency"], 3)}
                       for r in rounds],
            "per_run_overhead_s": round(flow_overhead, 2),
            "run_overhead_s": round(one_run["overhead_s"], 2),
            "run_startup_s": round(one_run["startup_s"], 2),
            "run_queued_s": round(one_run["queued_s"], 2),
            "subflow_overhead_median_s": one_run["subflow_overhead_s"],
            "subflow_running_median_s": one_run["subflow_running_s"],
            "meets_targets": flow_efficiency >= TARGET_EFFICIENCY and flow_overhead <= TARGET_OVERHEAD_S,
            "loadavg": {"start": load_fleet_flow, "end": load_fleet_flow_end},
        },
        "server_rss_mb_per_process": server_rss,
        "fleet_run_median_s": {k: med([x[k] for x in lines]) for k in ("queued_s", "startup_s", "running_s",
                                                                         "overhead_s")},
        "fleet_running_sum_s": round(sum(x["running_s"] for x in lines), 2),
        "serial_backup_median_s": med(list(serial.values())),
        "import_baseline": imports,
        "bytecode_missing": bytecode_missing(),
        "single_run_start_up_log": startup_log,
        "targets": {"efficiency": TARGET_EFFICIENCY, "per_run_overhead_s": TARGET_OVERHEAD_S},
        "meets_targets": efficiency >= TARGET_EFFICIENCY and overhead <= TARGET_OVERHEAD_S,
        "loadavg": {"before": load_before, "fleet_start": load_fleet, "fleet_end": load_fleet_end,
                    "serial_start": load_serial, "serial_end": load_serial_end},
        "setup_s": round(setup_s, 1),
        "definitions": {
            "wall_s": "first fleet run's creation to the last one's end, server timestamps; all runs created at "
                      "once through the ops-process pool, each Completed",
            "serial_s": "sum of flows.backup.backup(stack_file=inventory, stack=name) durations, one after another "
                        "in one process against the same server (imports done once, before the loop; the "
                        "environment prefect.yaml gives a run; workers stopped), right after the median round's "
                        "fleet; serial_median_s: the median over the rounds' serial loops",
            "efficiency": "serial_s / (wall_s x cores_used), cores_used = min(os.cpu_count(), workers x worker_limit), "
                          "per round with that round's serial loop; the median round's",
            "serial_once_2026_12_01": "the figures before each round had its own serial loop and before runs "
                                      "skipped the version check and CSRF-token requests: kept beside",
            "per_run_overhead_s": "median over the fleet's runs of (end - Pending) - Running time: the process "
                                  "worker's own cost per run (process start, imports, loading the flow, reporting "
                                  "the end); queueing for a free worker slot is not in it",
            "single_run_overhead_s": "one run on the idle pool after the fleet: creation -> end minus its Running "
                                     "time (the overhead plus the worker's polling)",
            "fleet_run_median_s": "medians per run: queued_s created -> Pending, startup_s Pending -> Running, "
                                  "running_s the Running time (the flow's own time under the fleet's contention)",
            "server_rss_mb": "VmHWM summed over the Prefect server's processes (its database's own memory not "
                             "included: server_database says which)",
            "sqlite_server_2026_12_01": "the earlier figures, server on SQLite and no compiled bytecode (see the "
                                        "note): the baseline changed, so they stay beside the new ones",
            "import_baseline": "the raw floor of per-run overhead, same run: `python -c 'import prefect.engine, "
                               "flows.backup'` wall and CPU seconds (what each run's new process pays first)",
            "single_run_overhead_default_command_s": "the same single-run overhead for a run created with the job "
                                                     "variable command unset: Prefect 3.9's default, a workspace "
                                                     "supervisor process that then starts the engine",
            "single_run_start_up_log": "the single run's log lines from its creation to its first task, seconds "
                                       "after its creation: where the start-up goes",
            "loadavg": "os.getloadavg() at each phase: the machine is shared, read the figures with it",
            "cold_engine": "the same per-deployment fleet right after, each run created with the job variable "
                           "command = `python -m prefect.engine` (the pool's command before warm starts): wall_s, "
                           "efficiency (against serial_median_s) and per_run_overhead_s defined as above; the "
                           "baseline, measured in the same run",
            "idle_polling_cpu_s_per_min": "CPU seconds per minute of the server, the workers and the whole machine "
                                          "while the workers only poll (no run), measured over IDLE_WINDOW_S before "
                                          "the fleet: what worker_query_seconds costs",
            "query_1s_2026_12_01": "the same bench with the workers polling every second instead of every 2 s: "
                                   "kept beside, with why it is not the setting",
            "rounds": "each round: the per-deployment fleet, then the same backups in the serial loop (the top-level "
                      "figures are the round of median efficiency; round 1's fleet is every stack's first night, "
                      "which uploads its files): wall_s, serial_s, efficiency, per_run_overhead_s, the machine's "
                      "CPU seconds and the load; settled_s: the wait before the fleet, the backup/fleet run and "
                      "the serial loop until the machine was quiet (under 0.25 cores busy over 2 s, 60 s at most), "
                      "so that no phase pays the previous one's tail",
            "before_one_poll_2026_12_01": "the same bench while its wait for the runs read each run once a second "
                                          "(20 requests a second on the server under test, which the serial phase "
                                          "did not have): kept beside",
            "before_one_session_2026_12_01": "the same bench before each process used one boto3 session (the "
                                             "serial baseline was slower then): kept beside",
            "cold_engine_2026_12_01": "the top-level figures as committed before warm starts (cold engine, the "
                                      "previous session's run): kept beside the new ones",
            "cpu_s": "CPU seconds per phase (/proc): machine = the whole machine busy (all cores); runs = the flow-run "
                     "processes (reaped by the workers, or by the zygote; for serial, the serial loop's process); "
                     "workers = the worker processes themselves; server = the Prefect server's session; other = "
                     "the rest (PostgreSQL, S3, sshd, podman, the fleet's pg_dump...). efficiency_factors splits "
                     "efficiency = 1/serial_cores_busy x cpu_ratio_serial_to_phase x cores_filled",
            "server_requests": "the API requests the Prefect server answered in each phase (its access log): per "
                               "run (fleet: the median round; fleet_flow: per stack; serial: per backup) and the "
                               "top endpoints per run; the bench's own wait (one filter request every 2 s) is in "
                               "them",
            "health": "one minute's health sweeps of every stack, three ways: a health-sweep/every-minute-<stack> "
                      "run per stack (all created at once, the pool's workers), ONE health-sweep/fleet run "
                      "(max_parallel = fleet_flow's), and flows.health.health_sweep in a loop in one process; "
                      "machine_cpu_s_per_stack_sweep = the machine's busy CPU seconds in the phase / stacks (what "
                      "sweeping N stacks every minute costs: N x it per minute); cpu_s split as for the backups",
            "zygote_rss_mb": "RSS and peak RSS of the warm-start zygote after the fleet (its forked runs share its "
                             "pages copy-on-write): what a warm start costs in memory",
            "fleet_flow": "the same stacks as subflows of ONE backup/fleet run (at most max_parallel at once, threads "
                          "of one flow-run process; each stack's writer lock and the cluster's dump limit hold) on "
                          "the same pool and workers, in each round between the per-deployment fleet and the serial "
                          "loop: wall_s its creation -> end; efficiency the round's serial_s / (wall_s x cores_used) "
                          "(the round of median efficiency reported, every round in rounds), cores_used = min(os.cpu_count(), "
                          "max_parallel); per_run_overhead_s what each stack pays beyond its flow's own time = the "
                          "run's overhead ((end - Pending) - Running: its one process start) / stacks + the median "
                          "subflow's (created -> end) - Running",
        },
    }
    print(f"{'stacks':>7}{'workers':>8}{'limit':>6}{'wall s':>9}{'serial s':>10}{'eff.':>7}{'overhead s':>12}"
          f"{'server MB':>11}")
    print(f"{stacks:>7}{workers:>8}{limit:>6}{wall_s:>9.1f}{serial_s:>10.1f}{efficiency:>7.2f}{overhead:>12.2f}"
          f"{result['server_rss_mb']:>11.0f}")
    print(f"{'cold engine':>21}{cold_wall:>9.1f}{serial_med:>10.1f}{cold_efficiency:>7.2f}{cold_overhead:>12.2f}"
          f"   (the same runs, python -m prefect.engine)")
    print(f"{'fleet flow':>21}{flow_wall:>9.1f}{median_flow['serial_s']:>10.1f}{flow_efficiency:>7.2f}{flow_overhead:>12.2f}"
          f"   (one backup/fleet run, max_parallel {fleet_parallel})")
    per = health["machine_cpu_s_per_stack_sweep"]
    print(f"health sweeps, machine CPU-s per stack: {per['per_stack_runs']} as runs of their own, "
          f"{per['fleet_run']} in one fleet run, {per['serial']} in one process")
    print("server requests per run: " + ", ".join(f"{k} {v['per_run']}" for k, v in requests_per_phase.items()))
    return result
