"""Pure health logic: parsers on recorded outputs, sustained CPU, DigitalOcean CPU, the alert state machine."""

from __future__ import annotations

from odoo_stack_ops.health import facts
from odoo_stack_ops.health.checks import do_cpu_percent
from odoo_stack_ops.health.evaluate import AlertPolicy, AlertState, CheckResult, keep_samples, step, sustained_above

PROC_STAT = """cpu  4705 150 1120 16250 520 0 25 0 0 0
cpu0 2350 75 560 8125 260 0 12 0 0 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
"""
MEMINFO = "MemTotal:        8039720 kB\nMemFree:          301248 kB\nMemAvailable:     603000 kB\nBuffers: 1 kB\n"
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9000000  100    0    0    0     0          0         0  9000000  100    0    0    0     0       0          0
  eth0: 1000000  10    0    0    0     0          0         0   500000   5    0    0    0     0       0          0
"""
DF = """Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/vda1         81106868  70000000   11090484      87% /
tmpfs              4019860         0    4019860       0% /dev/shm
/dev/sdb1          1000000    100000     900000      10% /mnt/odoo data
"""


def test_parsers_on_recorded_outputs():
    busy, total = facts.cpu_jiffies(PROC_STAT)
    assert (busy, total) == (4705 + 150 + 1120 + 25, 4705 + 150 + 1120 + 16250 + 520 + 25)
    assert facts.cpu_percent((0, 0), (50, 100)) == 50.0
    assert facts.memory_percent(MEMINFO) == 92.5
    assert facts.net_bytes(NET_DEV) == 1_500_000
    assert facts.net_mbps(0, 12_500_000, 1.0) == 100.0
    assert facts.net_mbps(10, 5, 1.0) == 0.0  # counter reset
    assert facts.disk_percent(DF) == {"/": 87.0, "/dev/shm": 0.0, "/mnt/odoo data": 10.0}


def test_cpu_must_be_sustained_for_the_whole_window():
    now = 1000.0
    assert not sustained_above([(now, 99.0)], 80, 300, now)  # one sample is not five minutes
    series = [(now - 300 + 60 * i, 95.0) for i in range(6)]
    assert sustained_above(series, 80, 300, now)
    assert not sustained_above([*series[:-1], (now, 50.0)], 80, 300, now)
    kept = keep_samples([(now - 1000, 1.0), (now - 400, 2.0), (now - 10, 3.0)], now, 300)
    assert kept == [(now - 400, 2.0), (now - 10, 3.0)]


def test_digitalocean_cpu_from_mode_counters():
    resp = {"data": {"result": [
        {"metric": {"mode": "idle"}, "values": [[0, "100"], [300, "340"]]},
        {"metric": {"mode": "user"}, "values": [[0, "10"], [300, "70"]]},
    ]}}
    assert do_cpu_percent(resp) == 20.0
    assert do_cpu_percent({"data": {"result": []}}) == 0.0


def run(states, results, policy, start=0.0, every=60.0):
    actions = []
    state = states
    for i, status in enumerate(results):
        state, action = step(state, CheckResult("c", status), start + i * every, policy)
        actions.append(action)
    return state, actions


def test_alert_after_n_failures_once_then_remind_then_one_resolve():
    policy = AlertPolicy(fail_after=3, ok_after=2, remind_s=600)
    state, actions = run(AlertState(), ["fail"] * 13 + ["ok"] * 4, policy)
    assert actions[:3] == [None, None, "alert"]
    assert actions.count("alert") == 1
    assert actions.count("remind") == 1 and actions.index("remind") == 12  # 10 minutes after the alert
    assert actions[13:] == [None, "resolve", None, None]
    assert not state.alerting and state.since is None


def test_flapping_below_threshold_never_alerts():
    policy = AlertPolicy(fail_after=3, ok_after=2)
    _, actions = run(AlertState(), ["fail", "fail", "ok"] * 10, policy)
    assert set(actions) == {None}


def test_warn_is_not_a_failure():
    _, actions = run(AlertState(), ["warn"] * 10, AlertPolicy(fail_after=1))
    assert set(actions) == {None}
