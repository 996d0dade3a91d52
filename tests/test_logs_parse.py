"""Pure log parsing: Odoo lines with tracebacks joined, nginx access/error, fallback; deterministic ids."""

from __future__ import annotations

from odoo_stack_ops.logs import alerts, parse

ODOO = [
    "2026-11-25T01:02:03.100000001Z 2026-11-25 01:02:03,100 7 INFO odoo_core odoo.modules.loading: loading 42 modules",
    "2026-11-25T01:02:04.000000000Z 2026-11-25 01:02:04,000 7 ERROR odoo_core odoo.http: Exception during request",
    "2026-11-25T01:02:04.000000000Z Traceback (most recent call last):",
    '2026-11-25T01:02:04.000000001Z   File "/odoo/http.py", line 1, in dispatch',
    "2026-11-25T01:02:04.000000002Z ValueError: boom",
    "2026-11-25T01:02:05.000000000Z 2026-11-25 01:02:05,000 7 CRITICAL odoo_core odoo.service.server: Failed to init",
]


def rows(raw, kind="odoo", after=None):
    lines = parse.number_lines(raw, after=after)
    return [parse.to_row(e, host="h", container="c", stream="stderr", kind=kind)
            for e, _ in parse.group_entries(lines, multiline=kind == "odoo")]


def test_odoo_lines_and_traceback_joined():
    out = rows(ODOO)
    assert [r[5] for r in out] == ["INFO", "ERROR", "CRITICAL"]
    assert [r[6] for r in out] == ["odoo.modules.loading", "odoo.http", "odoo.service.server"]
    assert out[1][7].endswith("ValueError: boom") and "Traceback" in out[1][7]
    attrs = out[1][8]
    assert attrs == {"pid": 7, "db": "odoo_core", "odoo_time": "2026-11-25 01:02:04,000", "lines": 4}
    assert out[0][1].isoformat() == "2026-11-25T01:02:03.100000+00:00"


def test_same_stamp_lines_get_ranks_and_the_cursor_skips_exactly():
    lines = list(parse.number_lines(ODOO))
    assert lines[1].stamp == lines[2].stamp and [ln.seq for ln in lines] == [0, 0, 1, 0, 0, 0]
    after = (lines[2].stamp, lines[2].seq)
    rest = list(parse.number_lines(ODOO, after=after))
    assert [ln.text for ln in rest] == [ln.text for ln in lines[3:]]


def test_ids_are_deterministic_and_distinct():
    a, b = rows(ODOO), rows(ODOO)
    assert [r[0] for r in a] == [r[0] for r in b]
    assert len({r[0] for r in a}) == 3


def test_last_entry_is_flagged_so_it_can_settle():
    flags = [last for _, last in parse.group_entries(parse.number_lines(ODOO), multiline=True)]
    assert flags == [False, False, True]


def test_nginx_access_and_error():
    raw = [
        '2026-11-25T01:00:00.000000000Z 10.0.0.1 - - [25/Nov/2026:01:00:00 +0000] "GET /web/login HTTP/1.1" 200 512 "-" "curl/8"',
        '2026-11-25T01:00:01.000000000Z 10.0.0.2 - bob [25/Nov/2026:01:00:01 +0000] "POST /jsonrpc HTTP/1.1" 502 0 "https://x" "Mozilla"',
        "2026-11-25T01:00:02.000000000Z 2026/11/25 01:00:02 [error] 29#29: *1 connect() failed (111: Connection refused)",
    ]
    out = rows(raw, kind="nginx")
    assert [r[5] for r in out] == ["INFO", "ERROR", "ERROR"]
    assert [r[6] for r in out] == ["nginx.access", "nginx.access", "nginx.error"]
    assert out[1][8]["status"] == 502 and out[1][8]["user"] == "bob"


def test_generic_fallback_sniffs_levels():
    raw = ["2026-11-25T01:00:00.000000000Z [Workflow] warn: retrying", "2026-11-25T01:00:01.000000000Z plain line",
           "2026-11-25T01:00:02.000000000Z level=fatal msg=crash"]
    assert [r[5] for r in rows(raw, kind="generic")] == ["WARNING", None, "CRITICAL"]


def test_critical_grouping_is_rate_limited():
    found = [{"container": "odoo", "logger": "odoo.http", "level": "ERROR", "message": f"e{i}"} for i in range(5)]
    msgs, state = alerts.plan_messages(found, {}, now=1000, min_interval_s=600)
    assert len(msgs) == 1 and msgs[0]["count"] == 5
    msgs, state = alerts.plan_messages(found[:2], state, now=1300, min_interval_s=600)
    assert msgs == [] and state["odoo|odoo.http"]["suppressed"] == 2
    msgs, state = alerts.plan_messages(found[:1], state, now=1700, min_interval_s=600)
    assert msgs[0]["count"] == 3 and msgs[0]["suppressed_before"] == 2
    match = alerts.critical_matcher(["CRITICAL"], [r"Failed to load registry"])
    assert match((0, 0, 0, 0, 0, "INFO", None, "ERROR odoo: Failed to load registry", "{}"))
    assert not match((0, 0, 0, 0, 0, "ERROR", None, "x", "{}"))
