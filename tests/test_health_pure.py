"""Pure health logic: parsers on recorded outputs, threshold verdicts (sustained CPU over kept readings),
DigitalOcean matrices, the alert state machine (incl. a randomised no-spam property), state persistence,
the concurrent runner's per-check timeouts, the runbooks' findings."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping

import pytest

from odoo_stack_ops.command import Command
from odoo_stack_ops.config import Thresholds, validate_tree
from odoo_stack_ops.executors.base import Executor, Result
from odoo_stack_ops.health import checks, facts, runbooks
from odoo_stack_ops.health import thresholds as th
from odoo_stack_ops.health.alerting import (
    AlertPolicy,
    AlertState,
    SweepState,
    delivered,
    forget_stale,
    notice,
    parse_state,
    step,
)
from odoo_stack_ops.health.checks import CheckResult, Probe

# --- recorded outputs (Debian 12 test machine, 2 vCPU; podman 4.3.1's Docker-compatible API) ---------------------

PROC_STAT_1 = """cpu  349283 0 113610 2049296 3755 0 3811 303 0 0
cpu0 134731 0 53675 1068950 620 0 1681 149 0 0
cpu1 214552 0 59934 980345 3134 0 2129 154 0 0
intr 114930548 113199788 3 0 5 263 0 4 0 0 0 0 0 0
ctxt 30292771
btime 1795571405
"""
PROC_STAT_2 = "cpu  358292 0 117483 2111292 3853 0 3899 305 0 0\ncpu0 1 0 1 1 1 0 1 1 0 0\n"
MEMINFO = """MemTotal:       24684084 kB
MemFree:        21612372 kB
MemAvailable:   23156636 kB
Buffers:           39984 kB
Cached:          1277964 kB
SwapCached:            0 kB
HugePages_Total:       0
"""
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 56015832894 4273149    0    0    0     0          0         0 56015832894 4273149    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  ifb1:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 1101206434   37170    0    0    0     0          0         0  3256614   21610    0    0    0     0       0          0
"""
DOCKER_HOST_NET_DEV = NET_DEV + """docker0: 5000 10 0 0 0 0 0 0 7000 10 0 0 0 0 0 0
vethab12cd: 5000 10 0 0 0 0 0 0 7000 10 0 0 0 0 0 0
  eth1:  2000   3    0    0    0     0          0         0     1000    2    0    0    0     0       0          0
"""
DF_P = """Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 26356572  80034340      25% /
tmpfs             24684084     4220  24679864       1% /dev/shm
tmpfs                 1024      900       124      88% /tmp/h7 mnt/disk full
"""
FREE_M = """               total        used        free      shared  buff/cache   available
Mem:           24105        1491       21105          99        1913       22613
Swap:              0           0           0
"""
DF_H = """Filesystem      Size  Used Avail Use% Mounted on
/dev/vda        252G   26G   77G  25% /
tmpfs            24G  4.2M   24G   1% /dev/shm
/dev/vdb1        50G   45G  5.0G  90% /var/lib/docker
"""
INSPECT_RUNNING_STARTING = {"Name": "/rec-web-1", "RestartCount": 0, "State": {"Status": "running", "Running": True, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 30211, "ExitCode": 0, "Error": "", "StartedAt": "2026-11-25T05:39:57.820842729Z", "FinishedAt": "0001-01-01T00:00:00Z", "Health": {"Status": "starting", "FailingStreak": 0, "Log": None}}, "Config": {"Labels": {"com.docker.compose.project": "rec", "com.docker.compose.service": "web"}, "Healthcheck": {"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1000000000, "Timeout": 30000000000, "Retries": 1}}}
INSPECT_UNHEALTHY = {"Name": "/rec-web-1", "RestartCount": 0, "State": {"Status": "running", "Running": True, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 30211, "ExitCode": 0, "Error": "", "StartedAt": "2026-11-25T05:39:57.820842729Z", "FinishedAt": "0001-01-01T00:00:00Z", "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": [{"Start": "2026-11-25T05:39:58.569438394Z", "End": "2026-11-25T05:39:58.6517617Z", "ExitCode": 1, "Output": ""}]}}, "Config": {"Labels": {"com.docker.compose.project": "rec", "com.docker.compose.service": "web"}, "Healthcheck": {"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1000000000, "Timeout": 30000000000, "Retries": 1}}}
INSPECT_EXITED = {"Name": "/rec-web-1", "RestartCount": 0, "State": {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 143, "Error": "", "StartedAt": "2026-11-25T05:39:57.820842729Z", "FinishedAt": "2026-11-25T05:39:58.678392912Z", "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": []}}, "Config": {"Labels": {"com.docker.compose.project": "rec", "com.docker.compose.service": "web"}, "Healthcheck": {"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1000000000, "Timeout": 30000000000, "Retries": 1}}}
INSPECT_CRASHED = {"Name": "/rec-crash-1", "RestartCount": 5, "State": {"Status": "exited", "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 3, "Error": "", "StartedAt": "2026-11-25T05:39:59.459642401Z", "FinishedAt": "2026-11-25T05:39:59.458392927Z", "Health": {"Status": "", "FailingStreak": 0, "Log": None}}, "Config": {"Labels": {"com.docker.compose.service": "crash"}, "Healthcheck": None}}
PODMAN_STATS = {"read": "2026-11-25T05:39:58.331812226Z", "preread": "0001-01-01T00:00:00Z", "pids_stats": {"current": 2}, "num_procs": 0, "cpu_stats": {"cpu_usage": {"total_usage": 28076595, "percpu_usage": [24296559, 3780036], "usage_in_kernelmode": 4000000, "usage_in_usermode": 24076595}, "system_cpu_usage": 4800533053921, "online_cpus": 2, "cpu": 0, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}, "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "cpu": 0, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}, "memory_stats": {"usage": 712704, "limit": 25276502016}, "name": "rec-web-1", "Id": "d2efbd7385c9", "networks": {"network": {"rx_bytes": 0, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0, "tx_bytes": 0, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0}}}
# Docker Engine's shape (cgroup v2): precpu filled by a stream=false read, page cache in stats.inactive_file.
DOCKER_STATS = {"cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 104_000_000_000, "online_cpus": 4}, "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}, "system_cpu_usage": 100_000_000_000}, "memory_stats": {"usage": 600 * 2**20, "limit": 1024 * 2**20, "stats": {"inactive_file": 88 * 2**20}}, "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}}}

TH = Thresholds()


def test_proc_stat_meminfo_net_dev():
    a, b = facts.cpu_times(PROC_STAT_1), facts.cpu_times(PROC_STAT_2)
    assert a == facts.CpuTimes(349283 + 113610 + 3811 + 303, 349283 + 113610 + 2049296 + 3755 + 3811 + 303)
    assert facts.cpu_percent(a, b) == round(100 * (b.busy - a.busy) / (b.total - a.total), 2) == 17.28
    assert facts.cpu_percent(b, a) is None  # counters went backwards: a reboot between readings
    with pytest.raises(ValueError, match="cpu line"):
        facts.cpu_times("intr 1 2 3\n")
    info = facts.meminfo(MEMINFO)
    assert info["MemTotal"] == 24684084 and info["HugePages_Total"] == 0
    assert facts.memory_used_percent(info) == 6.19
    counters = facts.net_dev(NET_DEV)
    assert counters["eth0"] == (1101206434, 3256614) and set(counters) == {"lo", "ifb0", "ifb1", "eth0"}
    assert facts.physical_bytes(counters) == (1101206434, 3256614)
    # bridges and veths carry container traffic that eth0 already counts
    assert facts.physical_bytes(facts.net_dev(DOCKER_HOST_NET_DEV)) == (1101206434 + 2000, 3256614 + 1000)


def test_df_free_and_the_filesystem_holding_a_path():
    rows = facts.df_p(DF_P)
    assert [r.mount for r in rows] == ["/", "/dev/shm", "/tmp/h7 mnt/disk full"]
    assert rows[2].percent == 88.0 and rows[2].size_kb == 1024 and rows[2].available_kb == 124
    assert facts.disk_for("/tmp/h7 mnt/disk full/sub/dir", rows).mount == "/tmp/h7 mnt/disk full"
    assert facts.disk_for("/tmp/h7 mnt/disk", rows).mount == "/"  # a prefix of a mount point is not inside it
    assert facts.disk_for("/dev/shm", rows).mount == "/dev/shm"
    assert facts.disk_for("relative/path", rows) is None
    assert facts.disk_for("/x", []) is None
    free = facts.free_m(FREE_M)
    assert free["Mem"] == {"total": 24105, "used": 1491, "free": 21105, "shared": 99, "buff/cache": 1913,
                           "available": 22613}
    assert free["Swap"]["total"] == 0 and facts.free_m("") == {}


def test_docker_inspect_and_container_verdicts():
    starting, unhealthy = facts.docker_inspect(INSPECT_RUNNING_STARTING), facts.docker_inspect(INSPECT_UNHEALTHY)
    exited, crashed = facts.docker_inspect(INSPECT_EXITED), facts.docker_inspect(INSPECT_CRASHED)
    assert (starting.name, starting.service, starting.running, starting.health) == ("rec-web-1", "web", True, "starting")
    assert starting.finished_at == "" and exited.finished_at.startswith("2026-11-25T05:39:58")
    assert crashed.has_healthcheck is False and crashed.health is None and crashed.restarts == 5
    verdict = [th.container_verdict(f.running, f.status, f.has_healthcheck, f.health)
               for f in (starting, unhealthy, exited, crashed)]
    assert [v.status for v in verdict] == ["warn", "fail", "fail", "fail"]
    assert verdict[1].value == "running, unhealthy" and verdict[1].threshold == "running, healthy"
    assert th.container_verdict(True, "running", False, None).status == "ok"
    assert th.restarts_verdict(None, 5).status == "ok"  # first sight: nothing to compare with
    assert th.restarts_verdict(5, 5).status == "ok"
    grown = th.restarts_verdict(3, 5)
    assert grown.status == "fail" and grown.value == "+2 since the last sweep (5 in all)"


def test_docker_stats_cpu_share_and_memory_without_cache():
    podman = facts.docker_stats(PODMAN_STATS)
    assert (podman.cpu_ns, podman.system_ns, podman.online_cpus, podman.pre_system_ns) == (
        28076595, 4800533053921, 2, 0)
    assert facts.container_cpu_percent(podman.pre_cpu_ns, podman.pre_system_ns, podman) is None  # no precpu
    assert facts.memory_percent_of_limit(podman) == round(100 * 712704 / 25276502016, 2)
    docker = facts.docker_stats(DOCKER_STATS)
    # 1 s of CPU in 4 s of all-CPU time: a quarter of the host (docker stats would show 100 % of 400 %)
    assert facts.container_cpu_percent(docker.pre_cpu_ns, docker.pre_system_ns, docker) == 25.0
    assert docker.memory_used == 512 * 2**20 and facts.memory_percent_of_limit(docker) == 50.0
    assert (docker.rx_bytes, docker.tx_bytes) == (11, 22)
    assert facts.memory_percent_of_limit(facts.docker_stats({})) is None


def test_sustained_cpu_needs_the_whole_window_above():
    now = 10_000.0
    minute = [(now - 60 * (i + 1), now - 60 * i, 95.0) for i in range(5)]  # five hot minutes back to back
    assert th.sustained_above(minute, 80, 300, now)
    assert not th.sustained_above(minute[:4], 80, 300, now)  # four minutes of history is not five
    cooled = [(s, e, 50.0 if i == 2 else p) for i, (s, e, p) in enumerate(minute)]
    assert not th.sustained_above(cooled, 80, 300, now)
    long_gap = [(now - 900, now, 97.0)]  # one reading after a missed sweep covers the window: the average counts
    assert th.sustained_above(long_gap, 80, 300, now)
    assert th.keep_segments([(0, 100, 1.0), (now - 400, now - 290, 2.0), (now - 290, now, 3.0)], now, 300) == [
        (now - 400, now - 290, 2.0), (now - 290, now, 3.0)]
    verdicts = [th.cpu_verdict([], TH, now), th.cpu_verdict(minute[:1], TH, now), th.cpu_verdict(minute, TH, now),
                th.cpu_verdict([(now - 60, now, 12.5)], TH, now)]
    assert [v.status for v in verdicts] == ["ok", "warn", "fail", "ok"]
    assert verdicts[0].value == "first reading: no rate yet"
    assert verdicts[2].value == "95.0 %, above for 5 min" and verdicts[2].threshold == "> 80 % for 5 min"


def test_plain_thresholds_of_the_seed():
    assert th.memory_verdict(90.0, TH).status == "ok" and th.memory_verdict(90.1, TH).status == "fail"
    disk = th.disk_verdict(88.0, TH, " of 1.0 MiB on /mnt")
    assert (disk.status, disk.value, disk.threshold) == ("fail", "88 % of 1.0 MiB on /mnt", "> 85 %")
    assert th.disk_verdict(85.0, TH).status == "ok"
    assert th.rate_mbps(0, 12_500_000, 1.0) == 100.0 and th.rate_mbps(10, 5, 60) is None and th.rate_mbps(1, 2, 0) is None
    net = th.network_verdict(150.0, 3.0, TH)
    assert (net.status, net.value, net.threshold) == ("fail", "in 150.00 / out 3.00 Mbps", "> 100 Mbps")
    assert [th.pool_verdict(n, 25).status for n in (5, 19, 20, 24, 25, 30)] == ["ok", "ok", "warn", "warn", "fail", "fail"]
    assert th.response_verdict(200, 0.1, 2).status == "ok" and th.response_verdict(200, 2.5, 2).status == "warn"
    assert th.response_verdict(503, 0.1, 2).value == "HTTP 503 in 0.100 s"
    assert th.cert_verdict(30, "TLSv1.3").status == "ok" and th.cert_verdict(3, "TLSv1.3").status == "warn"
    assert th.cert_verdict(-1, "TLSv1.2").status == "fail"


def matrix(*series):
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels, "values": [[t, str(v)] for t, v in points]} for labels, points in series]}}


def test_digitalocean_matrices():
    # cumulative CPU seconds per mode, 4 vCPUs, 60 s apart: 90 % busy then 20 % busy
    cpu = matrix(({"host_id": "1", "mode": "idle"}, [(0, 1000), (60, 1024), (120, 1216)]),
                 ({"host_id": "1", "mode": "user"}, [(0, 500), (60, 716), (120, 764)]))
    assert th.do_cpu_segments(cpu) == [(0.0, 60.0, 90.0), (60.0, 120.0, 20.0)]
    assert th.do_cpu_segments(matrix()) == [] and th.do_cpu_segments({}) == []
    total = matrix(({"host_id": "1"}, [(0, 8e9), (60, 8e9)]))
    avail = matrix(({"host_id": "1"}, [(0, 4e9), (60, 0.4e9)]))
    assert th.do_memory_percent(total, avail) == 95.0
    assert th.do_memory_percent(matrix(), avail) is None
    size = matrix(({"mountpoint": "/", "device": "/dev/vda1"}, [(0, 100.0)]),
                  ({"mountpoint": "/data", "device": "/dev/vdb"}, [(0, 200.0)]))
    free = matrix(({"mountpoint": "/", "device": "/dev/vda1"}, [(0, 50.0), (60, 10.0)]),
                  ({"mountpoint": "/data", "device": "/dev/vdb"}, [(0, 150.0)]))
    assert th.do_disk_percent(free, size) == {"/": 90.0, "/data": 25.0}
    bw = matrix(({"interface": "public", "direction": "inbound"}, [(60, 3.5), (0, 1.0)]))
    assert th.latest_value(bw) == 3.5 and th.latest_value(bw, interface="private") is None


# --- the alert state machine -------------------------------------------------------------------------------------

def run(statuses, policy, every=60.0, deliver=lambda i: True, state=None):
    """Feed a sequence of statuses one sweep apart; returns (state, [(sweep, action, delivered)])."""
    state = state or AlertState()
    sent = []
    for i, status in enumerate(statuses):
        now = i * every
        state, action = step(state, status, f"v{i}", now, policy)
        if action:
            ok = deliver(i)
            state = delivered(state, action, ok, now)
            sent.append((i, action, ok))
    return state, sent


def test_alert_after_n_then_quiet_then_remind_then_exactly_one_resolve():
    policy = AlertPolicy(fail_after=3, ok_after=2, remind_s=600)
    state, sent = run(["fail"] * 13 + ["ok"] * 4, policy)
    assert sent == [(2, "alert", True), (12, "remind", True), (14, "resolve", True)]
    assert not state.alerting and state.since is None and state.oks == 4 and not state.resolve_pending


def test_flapping_and_warnings_never_alert():
    policy = AlertPolicy(fail_after=3, ok_after=2)
    assert run(["fail", "fail", "ok"] * 10, policy)[1] == []
    assert run(["warn"] * 10, AlertPolicy(fail_after=1))[1] == []
    # flapping while alerting stays quiet too: one ok is not a recovery, the next fail is not a new alert
    assert run(["fail"] * 3 + ["ok", "fail"] * 5, policy)[1] == [(2, "alert", True)]


def test_undelivered_messages_are_retried_but_delivered_ones_never_repeat():
    policy = AlertPolicy(fail_after=2, ok_after=1, remind_s=3600)
    _, sent = run(["fail"] * 6 + ["ok"] * 3, policy, deliver=lambda i: i not in (1, 2, 6))
    assert sent == [(1, "alert", False), (2, "alert", False), (3, "alert", True), (6, "resolve", False),
                    (7, "resolve", True)]
    # it failed again before the channel heard it recover: the old alert still stands, no second ALERT
    _, sent = run(["fail", "fail", "ok", "fail", "fail", "ok", "ok"], policy, deliver=lambda i: i != 2)
    assert sent == [(1, "alert", True), (2, "resolve", False), (5, "resolve", True)]
    # an alert nobody received needs no "resolved"
    _, sent = run(["fail", "fail", "ok", "ok"], policy, deliver=lambda i: False)
    assert [a for _, a, _ in sent] == ["alert"]


def test_no_spam_property_over_random_histories():
    """Random statuses and delivery failures: at most one delivered alert per episode, reminders at least
    remind_s apart, and every delivered alert ends with exactly one delivered resolve once healthy."""
    rng = random.Random(7)
    for _ in range(300):
        policy = AlertPolicy(fail_after=rng.randint(1, 4), ok_after=rng.randint(1, 3), remind_s=rng.choice([120, 600]))
        statuses = [rng.choice(["ok", "fail", "fail", "warn"]) for _ in range(rng.randint(1, 60))]
        statuses += ["ok"] * (policy.ok_after + 3)
        _, sent = run(statuses, policy, deliver=lambda i: rng.random() > 0.2)
        good = [(i, a) for i, a, ok in sent if ok]
        open_alert, last = False, None
        for i, action in good:
            if action == "alert":
                assert not open_alert, (statuses, sent)
                open_alert, last = True, i
            elif action == "remind":
                assert open_alert and (i - last) * 60 >= policy.remind_s
                last = i
            else:
                assert open_alert, (statuses, sent)
                open_alert = False
        assert not open_alert, (statuses, sent)  # the trailing oks always produce the resolve


def test_notice_carries_colour_value_threshold_and_since():
    before = AlertState(fails=2, since=0.0)
    after, action = step(before, "fail", "exited", 180.0, AlertPolicy(fail_after=3))
    n = notice("container.web", action, before, after, value="exited", threshold="running",
               evidence="exit code 137", now=180.0, stack="sandbox")
    assert (n.title, n.level, n.text) == ("ALERT: container.web on sandbox", "danger", "exit code 137")
    assert n.fields == {"value": "exited", "threshold": "running", "since": "1970-01-01T00:00:00+00:00",
                        "failing for": "3 min"}
    r = notice("container.web", "resolve", after, AlertState(), value="running", threshold="running", evidence="",
               now=300.0, stack="sandbox")
    assert (r.title, r.level, r.text) == ("RESOLVED: container.web on sandbox", "good", "back to normal: running")


def test_policy_rejects_nonsense_and_no_webhook_means_nothing_to_retry():
    from prefect.logging import disable_run_logger

    from tasks.health import send_alerts

    with pytest.raises(ValueError, match="fail_after"):
        AlertPolicy(fail_after=0)
    before = AlertState(alerting=True, fails=3, since=0.0)
    n = notice("db.tcp", "alert", AlertState(), before, value="closed", threshold="TCP", evidence="", now=60.0,
               stack="prod")
    with disable_run_logger():
        states, sent = send_alerts.fn(config(), [n], {"db.tcp": before}, 60.0)
    assert sent is False and states["db.tcp"].notified_at == 60.0  # recorded as told: no retry every minute


def test_forget_stale_keeps_alerting_checks():
    policy = AlertPolicy(forget_after_s=100)
    states = {"old": AlertState(last_seen=0.0), "alerting": AlertState(alerting=True, last_seen=0.0),
              "fresh": AlertState(last_seen=950.0)}
    assert set(forget_stale(states, 1000.0, policy)) == {"alerting", "fresh"}


def test_state_round_trip_and_unreadable_state_starts_afresh():
    assert parse_state(None) == SweepState()
    state = SweepState({"db.tcp": AlertState(alerting=True, fails=4, since=1.5)}, {"host": {"cpu": [1.0, 2, 3]}})
    assert parse_state(state.to_json()) == state
    doc = json.loads(state.to_json())
    doc["checks"]["db.tcp"]["added_by_a_newer_version"] = 1
    assert parse_state(json.dumps(doc)).checks["db.tcp"].fails == 4
    assert parse_state("{not json") == SweepState()


# --- the concurrent runner ------------------------------------------------------------------------------------------

def test_each_check_has_its_own_timeout_and_errors_become_failures():
    release, hung_returned = threading.Event(), threading.Event()
    probes = [
        Probe("fast", lambda: CheckResult("fast", "ok", "1"), 5),
        Probe("hung", lambda: (release.wait(10), hung_returned.set(), CheckResult("hung", "ok"))[-1], 0.3),
        Probe("broken", lambda: 1 / 0, 5),
        Probe("slowish", lambda: time.sleep(0.5) or [CheckResult("a", "ok"), CheckResult("b", "warn")], 5),
        Probe("reading", lambda: checks.Reading([CheckResult("r", "ok")], {"k": 1}), 5),
    ]
    out = checks.run_all(probes)
    waited_for_hung = hung_returned.is_set()
    release.set()
    assert [r.name for r in out.results] == ["fast", "hung", "broken", "a", "b", "r"]
    hung, broken = out.results[1], out.results[2]
    assert (hung.status, hung.value, hung.threshold) == ("fail", "timeout", "answer within 0.3 s")
    assert broken.status == "fail" and "ZeroDivisionError" in broken.evidence
    assert out.samples == {"k": 1}
    assert not waited_for_hung  # the sweep came back while the hung probe still hung (its timing: bench/health)
    assert checks.run_all([]).results == []


def test_checks_run_at_once_not_one_after_another():
    """Each of 20 probes waits until all 20 are running: only a runner that starts them together passes (the
    timing is measured in bench/health)."""
    together = threading.Barrier(20, timeout=5)
    probes = [Probe(f"p{i}", lambda i=i: (together.wait(), CheckResult(f"p{i}", "ok"))[1], 10) for i in range(20)]
    results = checks.run_all(probes).results
    assert [(r.name, r.status) for r in results] == [(f"p{i}", "ok") for i in range(20)], results


# --- configuration-derived endpoints, host readings through an executor ------------------------------------------

def config(**over):
    tree = {"database": {"host": "db.example", "password": "pw-for-tests-only", "sslrootcert": "/etc/ssl/do-ca.crt"},
            "spaces": {"bucket": "b"},
            "ssh": {"host": "178.128.112.214"}, **over}
    return validate_tree(tree)


def test_service_urls_follow_the_service_discovery_table_and_overrides():
    cfg = config()
    assert checks.service_urls(cfg) == {"odoo-core": "http://127.0.0.1:8069/web/health",
                                        "n8n": "http://127.0.0.1:5678/healthz",
                                        "mattermost": "http://178.128.112.214:8065/api/v4/system/ping"}
    urls = checks.service_urls(cfg, {"mattermost": "http://127.0.0.1:1/ping", "extra": "http://x/y"})
    assert urls["mattermost"] == "http://127.0.0.1:1/ping" and urls["extra"] == "http://x/y"
    assert "nginx-proxy" not in urls  # no health path in the seed: its container check covers it


class RecordedHost(Executor):
    """Answers the host resource command with recorded outputs; any other command is a test failure."""

    where = "recorded host"

    def __init__(self) -> None:
        self.outputs: list[str] = []
        self.argvs: list[tuple[str, ...]] = []

    def run(self, cmd, *, env: Mapping | None = None, timeout=None, check=True, stdin=None, hint=""):
        command = Command.of(cmd, env)
        assert command.argv[:3] == ("sh", "-c", checks.HOST_SCRIPT), command.argv
        self.argvs.append(command.argv)
        return Result(command, 0, self.outputs.pop(0).encode(), b"", 0.01, self.where)

    def _stream(self, command, *, timeout, check, stdin):  # pragma: no cover - never used here
        raise AssertionError("unexpected stream")

    def get(self, *args, **kwargs):  # pragma: no cover
        raise AssertionError("unexpected get")

    def put(self, *args, **kwargs):  # pragma: no cover
        raise AssertionError("unexpected put")


def host_output(busy: int, total: int, rx: int, df: str = DF_P) -> str:
    stat = f"cpu  {busy} 0 0 {total - busy} 0 0 0 0 0 0\n"
    net = NET_DEV.replace("eth0: 1101206434", f"eth0: {rx}")
    return "@@\n".join([stat, MEMINFO, net, df])


def test_host_resources_keep_readings_across_sweeps_for_sustained_cpu_and_network_rate():
    host, prev, results = RecordedHost(), {}, {}
    mounts = ["/", "/tmp/h7 mnt/disk full", "/nowhere"]
    t0 = 1_000_000.0
    busy = total = 0
    for minute in range(7):  # 95 % busy every minute; 15 MB received each minute (2 Mbps)
        busy, total = busy + 5700, total + 6000
        host.outputs.append(host_output(busy, total, 15_000_000 * minute))
        reading = checks.host_resources(host, TH, mounts, prev, t0 + 60 * minute)
        prev = reading.samples["host"]
        results[minute] = {r.name: r for r in reading.results}
    assert host.argvs[0][3:] == ("sh", *mounts)  # mount points travel as arguments, never inside the script
    assert results[0]["host.cpu"].value == "first reading: no rate yet"
    assert [results[m]["host.cpu"].status for m in range(7)] == ["ok", "warn", "warn", "warn", "warn", "fail", "fail"]
    assert results[6]["host.network"].value == "in 2.00 / out 0.00 Mbps"
    assert results[6]["host.memory"].status == "ok" and results[6]["host.memory"].value == "6.2 %"
    assert results[6]["host.disk:/tmp/h7 mnt/disk full"].status == "fail"
    assert results[6]["host.disk:/tmp/h7 mnt/disk full"].value == "88 % of 1.0 MiB on /tmp/h7 mnt/disk full"
    assert results[6]["host.disk:/"].status == "ok" and results[6]["host.disk:/nowhere"].value == "25 % of 252.0 GiB on /"
    assert len(prev["cpu_segments"]) <= 6  # only what the 5-minute window still needs is kept
    # a reading older than the window starts afresh instead of averaging a whole night into one segment
    host.outputs.append(host_output(busy + 100, total + 100_000, 15_000_000 * 7))
    late = {r.name: r for r in checks.host_resources(host, TH, ["/"], prev, t0 + 60 * 6 + 3600).results}
    assert late["host.cpu"].status == "ok" and late["host.network"].value == "first reading: no rate yet"


def test_unreadable_host_is_one_failed_check():
    class Broken(RecordedHost):
        def run(self, *a, **kw):
            raise ConnectionError("ssh: connection refused")

    (r,) = checks.host_resources(Broken(), TH, ["/"], {}, 0.0).results
    assert (r.name, r.status) == ("host.resources", "fail") and "connection refused" in r.evidence


# --- runbooks ---------------------------------------------------------------------------------------------------------

ODOO_LOG = """2026-11-25 01:02:03,123 7 INFO odoo_core odoo.modules.loading: loading 42 modules...
2026-11-25 01:02:03,456 7 WARNING odoo_core odoo.modules.graph: module ipai_finance_ppm: Unmet dependencies: ipai_core, account_budget
2026-11-25 01:02:03,457 7 WARNING odoo_core odoo.modules.graph: module ipai_ghost: not installable, skipped
2026-11-25 01:02:04,000 7 ERROR odoo_core odoo.modules.loading: Some modules are not loaded, some dependencies or manifest may be missing: ['ipai_enterprise_bridge', 'ipai_finance_ppm']
2026-11-25 01:02:05,000 7 INFO odoo_core odoo.modules.loading: Modules loaded.
"""


def test_missing_dependencies_from_the_odoo_log():
    lines = runbooks.missing_lines(ODOO_LOG)
    assert len(lines) == 3 and all("Modules loaded" not in ln for ln in lines)
    assert runbooks.missing_modules(lines) == ["ipai_finance_ppm", "ipai_core", "account_budget", "ipai_ghost",
                                               "ipai_enterprise_bridge"]
    assert runbooks.missing_modules(runbooks.missing_lines("all fine\n")) == []


def test_resource_findings_and_evidence_report():
    found = runbooks.resource_findings(DF_H, FREE_M, 85, 90)
    assert found == ["disk /var/lib/docker is 90% full (threshold 85 %)"]
    tight = FREE_M.replace("22613", "1000")
    assert runbooks.resource_findings(DF_H, tight, 95, 90) == [
        "memory 96 % used, 1000 MiB available (threshold 90 %)"]
    md = runbooks.evidence_markdown("sandbox", "odoo-core", "2026-11-25T00:00:00+00:00", [
        runbooks.Section("Container won't start", "problem", "odoo-core is exited", {"df -h": DF_H, "logs": "```x```"}),
        runbooks.Section("Database connection failed", "ok", "fine | really")])
    assert md.startswith("# Diagnosis of odoo-core on sandbox")
    assert "| Container won't start | ❌ problem | odoo-core is exited |" in md
    assert "fine / really" in md and "````\n```x```\n````" in md and "/var/lib/docker" in md


def test_table_rows_put_failures_first_with_since():
    from tasks.health import table_rows

    results = [CheckResult("b", "ok"), CheckResult("a", "warn"), CheckResult("z", "fail", "x", "y", "e" * 500)]
    rows = table_rows(results, {"z": AlertState(alerting=True, since=0.0)})
    assert [r["check"] for r in rows] == ["z", "a", "b"]
    assert rows[0]["since"] == "1970-01-01T00:00:00+00:00" and rows[0]["alerting"] == "yes"
    assert len(rows[0]["evidence"]) == 300 and rows[1]["since"] == ""


def test_one_post_per_sweep_with_a_coloured_attachment_per_change():
    from tasks.health import alert_payload

    cfg = config(mattermost={"channel": "ops"})
    a = notice("host.disk:/", "alert", AlertState(), AlertState(alerting=True, since=0.0), value="88 %",
               threshold="> 85 %", evidence="/dev/vda", now=60.0, stack="prod")
    r = notice("db.tcp", "resolve", AlertState(alerting=True), AlertState(), value="open", threshold="TCP",
               evidence="", now=60.0, stack="prod")
    payload = alert_payload(cfg, [a, r])
    assert payload["channel"] == "ops" and payload["username"] == "odoo-stack-ops"
    assert [(x["title"], x["color"]) for x in payload["attachments"]] == [
        ("ALERT: host.disk:/ on prod", "#a30200"), ("RESOLVED: db.tcp on prod", "#2eb886")]
    assert {"short": True, "title": "threshold", "value": "> 85 %"} in payload["attachments"][0]["fields"]
