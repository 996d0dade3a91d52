"""Pure log shipping logic: parsers, row ids, the cursor (ranks, rotation, recreation), batches and time
slices, critical-line grouping and rate limiting. No services."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from odoo_stack_ops.logs import alerts, parse
from odoo_stack_ops.logs.options import LogShippingOptions
from odoo_stack_ops.logs.parse import Cursor, Source
from odoo_stack_ops.logs.ship import LogReader, demux, ship

ODOO = [
    "2026-11-25T01:02:03.1Z 2026-11-25 01:02:03,100 7 INFO odoo_core odoo.modules.loading: loading 42 modules",
    "2026-11-25T01:02:04Z 2026-11-25 01:02:04,000 7 ERROR odoo_core odoo.http: Exception during request",
    "2026-11-25T01:02:04Z Traceback (most recent call last):",
    '2026-11-25T01:02:04.000000001Z   File "/odoo/http.py", line 1, in dispatch',
    "2026-11-25T01:02:04.000000002Z ValueError: boom",
    "2026-11-25T01:02:05Z 2026-11-25 01:02:05,000 7 CRITICAL ? odoo.service.server: Failed to init",
]
SRC = Source("h", "odoo-core", "cid1", "stderr", "odoo")


def rows(raw, source=SRC, after=None, hold_last=None):
    return [r for r, *_ in parse.iter_rows(source, raw, after, hold_last)]


def test_odoo_lines_and_traceback_joined():
    out = rows(ODOO)
    assert [r[5] for r in out] == ["INFO", "ERROR", "CRITICAL"]
    assert [r[6] for r in out] == ["odoo.modules.loading", "odoo.http", "odoo.service.server"]
    assert out[1][7] == ('Exception during request\nTraceback (most recent call last):\n  File "/odoo/http.py", '
                         "line 1, in dispatch\nValueError: boom")
    assert json.loads(out[1][8]) == {"pid": 7, "db": "odoo_core", "odoo_time": "2026-11-25 01:02:04,000", "lines": 4}
    assert json.loads(out[2][8])["db"] == "?"
    assert out[0][1].isoformat() == "2026-11-25T01:02:03.100000+00:00"
    assert out[0][2:5] == ("h", "odoo-core", "stderr")


def test_stamps_compare_as_times_not_strings():
    # Docker trims trailing zeros: as strings ".1Z" > ".123Z" and "04Z" > "04.5Z"
    assert parse.stamp_ns("2026-11-25T01:02:03.1Z") < parse.stamp_ns("2026-11-25T01:02:03.123Z")
    assert parse.stamp_ns("2026-11-25T01:02:04Z") < parse.stamp_ns("2026-11-25T01:02:04.5Z")
    assert parse.stamp_ns("2026-11-25T01:02:04.000000001Z") - parse.stamp_ns("2026-11-25T01:02:04Z") == 1
    assert parse.stamp_ns("2026-11-25T09:02:04+08:00") == parse.stamp_ns("2026-11-25T01:02:04Z")
    with pytest.raises(ValueError, match="not a Docker log timestamp"):
        parse.stamp_ns("yesterday")


def test_ids_are_deterministic_time_ordered_uuid7_and_per_container():
    a, b = rows(ODOO), rows(ODOO)
    assert [r[0] for r in a] == [r[0] for r in b]
    ids = [uuid.UUID(bytes=r[0]) for r in a]
    assert len(set(ids)) == 3 and all(i.version == 7 for i in ids)
    assert ids == sorted(ids)  # the primary key grows with time
    other = rows(ODOO, Source("h", "odoo-core", "cid2", "stderr", "odoo"))  # a recreated container
    assert not {r[0] for r in a} & {r[0] for r in other}


def test_same_stamp_lines_are_ranked_and_identical_lines_stay_distinct():
    raw = ["2026-11-25T01:00:00Z ping"] * 3 + ["2026-11-25T01:00:01Z ping"]
    out = list(parse.iter_rows(Source("h", "c", "id", "stdout"), raw))
    assert [(seq, stamp[-3:]) for _, stamp, seq, _ in out] == [(0, "00Z"), (1, "00Z"), (2, "00Z"), (0, "01Z")]
    assert len({r[0] for r, *_ in out}) == 4


def cursor_after(raw, n, source=SRC):
    """The cursor a shipper commits after the n-th row."""
    _, stamp, seq, line = list(parse.iter_rows(source, raw))[n - 1]
    return Cursor(source.container_id, parse.stamp_ns(stamp), seq, parse.line_hash(line))


def test_resuming_after_the_cursor_gives_exactly_the_rest():
    full = rows(ODOO)
    for n in (1, 2, 3):
        assert rows(ODOO, after=cursor_after(ODOO, n)) == full[n:]
    # a cursor of another container instance (recreated) does not apply: the whole new log is new
    assert rows(ODOO, after=cursor_after(ODOO, 2)._replace(container_id="old")) == full


def test_rotation_that_cuts_into_the_cursors_run_loses_and_doubles_nothing():
    raw = [f"2026-11-25T01:00:00Z line {i}" for i in range(10)] + ["2026-11-25T01:00:01Z line 10"]
    src = Source("h", "c", "id", "stdout")
    cur = cursor_after(raw[:6], 6, src)  # lines 0-5 shipped while the second was still being written
    rotated = raw[4:]  # then rotation dropped lines 0-3: the ranks of the rest shift down by 4
    assert [r[7] for r in rows(rotated, src, cur)] == [f"line {i}" for i in range(6, 11)]
    gone = raw[7:]  # rotation dropped the cursor's line itself: everything left is newer
    assert [r[7] for r in rows(gone, src, cur)] == [f"line {i}" for i in range(7, 11)]
    legacy = cur._replace(line_hash=None)  # without the hash the rank alone decides (no rotation)
    assert [r[7] for r in rows(raw, src, legacy)] == [f"line {i}" for i in range(6, 11)]


def test_the_last_odoo_entry_is_held_back_until_it_settles():
    held = rows(ODOO, hold_last=lambda stamp: True)
    assert [r[6] for r in held] == ["odoo.modules.loading", "odoo.http"]
    seen = []
    assert len(rows(ODOO, hold_last=lambda stamp: seen.append(stamp) or False)) == 3
    assert seen == ["2026-11-25T01:02:05Z"]


def test_continuations_join_only_odoo_entries_and_are_capped():
    raw = ["2026-11-25T01:00:00Z Waiting for database", "2026-11-25T01:00:00Z still waiting",
           "2026-11-25T01:00:01Z 2026-11-25 01:00:01,000 1 ERROR db odoo.sql_db: bad query"]
    raw += [f"2026-11-25T01:00:02Z   frame {i}" for i in range(parse.MAX_ENTRY_LINES + 5)]
    out = rows(raw)
    assert [r[7] for r in out[:2]] == ["Waiting for database", "still waiting"]
    assert json.loads(out[2][8])["lines"] == parse.MAX_ENTRY_LINES
    assert len(out) == 3 + 6 and out[3][7] == f"  frame {parse.MAX_ENTRY_LINES - 1}"


def test_nginx_access_and_error_lines():
    src = Source("h", "nginx-proxy", "n1", "stdout", "nginx")
    raw = [
        '2026-11-25T01:00:00Z 10.0.0.1 - - [25/Nov/2026:01:00:00 +0000] "GET /web/login HTTP/1.1" 200 512 "-" "curl/8"',
        '2026-11-25T01:00:01Z 10.0.0.2 - bob [25/Nov/2026:01:00:01 +0000] "POST /jsonrpc HTTP/1.1" 502 - "https://x" "M"',
        '2026-11-25T01:00:01Z 10.0.0.3 - - [25/Nov/2026:01:00:01 +0000] "GET /a\\x22b HTTP/1.1" 404 0 "-" "x\\"y"',
        "2026-11-25T01:00:02Z 2026/11/25 01:00:02 [error] 29#29: *1 connect() failed (111: Connection refused)",
        "2026-11-25T01:00:03Z /docker-entrypoint.sh: Configuration complete; ready for start up",
    ]
    out = rows(raw, src)
    assert [r[5] for r in out] == ["INFO", "ERROR", "WARNING", "ERROR", None]
    assert [r[6] for r in out] == ["nginx.access", "nginx.access", "nginx.access", "nginx.error", None]
    attrs = [json.loads(r[8]) for r in out]
    assert attrs[1]["status"] == 502 and attrs[1]["user"] == "bob" and attrs[1]["bytes"] == 0
    assert attrs[2]["path"] == "/a\\x22b"  # escapes kept literally, still valid JSON
    assert attrs[3] == {"pid": 29, "tid": 29, "nginx_time": "2026/11/25 01:00:02"}
    assert out[3][7] == "*1 connect() failed (111: Connection refused)"


def test_generic_json_lines_level_sniffing_ansi_and_nul():
    src = Source("h", "mattermost", "m1", "stdout")
    raw = ['2026-11-25T01:00:00Z {"timestamp":"2026-11-25 01:00:00.000Z","level":"error","msg":"db down",'
           '"caller":"app/server.go:1","err":"dial tcp"}',
           "2026-11-25T01:00:01Z [Workflow] warn: retrying", "2026-11-25T01:00:02Z plain line",
           "2026-11-25T01:00:03Z level=fatal msg=crash", "2026-11-25T01:00:04Z \x1b[31mERROR\x1b[0m red\x00",
           "2026-11-25T01:00:05Z " + "x" * 200 + " ERROR late in the line"]
    out = rows(raw, src)
    assert [r[5] for r in out] == ["ERROR", "WARNING", None, "CRITICAL", "ERROR", None]
    assert out[0][6:8] == ("app/server.go:1", "db down")
    assert json.loads(out[0][8]) == {"timestamp": "2026-11-25 01:00:00.000Z", "err": "dial tcp"}
    assert out[4][7] == "ERROR red"


def test_attributes_are_always_valid_json():
    rnd = random.Random(7)
    alphabet = 'ab"\\\t\x01é /-:[]{}0123456789'
    for _ in range(300):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12)))
        for kind, text in (("nginx", f'{s} - {s} [x] "{s} {s} {s}" 200 12 "{s}" "{s}"'),
                           ("odoo", f"2026-11-25 01:00:00,000 1 INFO {s.replace(' ', '_') or 'db'} x.y: m"),
                           ("generic", "{" + s)):
            (row,) = rows([f"2026-11-25T01:00:00Z {text}"], Source("h", "c", "i", "stdout", kind))
            assert isinstance(json.loads(row[8]), dict), text


class FakeContainer:
    """Our own seam (not docker's): a name, an id and `logs()` frames, like the Engine API's stream."""

    def __init__(self, frames: list[bytes], name: str = "worker-1", cid: str = "w1") -> None:
        self.frames, self.name, self.id = frames, name, cid
        self.calls: list[dict] = []

    def logs(self, **kw):
        self.calls.append(kw)
        return iter(self.frames if kw["stdout"] else [])


def test_reader_joins_partial_records_holds_an_unfinished_line_and_keeps_utf8_intact():
    c = FakeContainer([b"2026-11-25T01:00:00Z caf\xc3", b"2026-11-25T01:00:01.5Z \xa9 au lait\n",
                       b"2026-11-25T01:00:01Z a\n", b"2026-11-25T01:00:02Z b\n", b"2026-11-25T01:00:03Z half"])
    reader = LogReader(c, "stdout", since=None)
    assert list(reader) == ["2026-11-25T01:00:00Z café au lait", "2026-11-25T01:00:01Z a", "2026-11-25T01:00:02Z b"]
    assert reader.incomplete
    assert c.calls[0] == {"stdout": True, "stderr": False, "timestamps": True, "stream": True, "follow": False}
    LogReader(c, "stdout", since=parse.since_for(Cursor("w1", 1_795_000_000_500_000_000, 0)))
    assert c.calls[-1]["since"] == 1_794_999_999  # a whole second early: the cursor's run is re-read whole


def test_demux_rebuilds_frames_cut_anywhere_by_the_reads():
    payloads = [b"2026-11-25T01:00:00Z a\n", b"", b"2026-11-25T01:00:01Z " + b"x" * 300 + b"\n", b"partial"]
    stream = b"".join(bytes((1, 0, 0, 0)) + len(p).to_bytes(4) + p for p in payloads)
    for size in (1, 3, 7, 8, 9, 64, len(stream)):
        blocks = (stream[i:i + size] for i in range(0, len(stream), size))
        assert [f for frames in demux(blocks) for f in frames] == payloads, size
    with pytest.raises(ValueError, match="inside a frame"):
        list(demux(iter([stream[:-1]])))


class MemorySink:
    """A sink with the direct sink's contract (rows and cursor together), in memory."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple] = {}
        self.cur: dict = {}
        self.writes = 0

    def cursors(self, host):
        return dict(self.cur)

    def write(self, rows, host, cursors):
        got = list(rows)
        if got:
            self.writes += 1
            for r in got:
                self.rows.setdefault(r[0], r)
            self.cur.update(cursors() if callable(cursors) else cursors)
        return len(got)


def test_time_slices_work_through_a_backlog_exactly_once():
    frames = [f"2026-11-25T01:00:{i // 1000:02d}Z line {i}\n".encode() for i in range(5000)]
    sink, c = MemorySink(), FakeContainer(frames)
    first = ship({"worker": c}, host="h", sink=sink, batch_size=100, max_seconds=1e-9, settle_s=0)
    assert not first.finished and first.rows == 100 and first.batches == 1
    runs = 1
    while True:
        stats = ship({"worker": c}, host="h", sink=sink, batch_size=700, max_seconds=1e-9, settle_s=0)
        runs += 1
        if stats.finished:
            break
    assert runs == 1 + 5000 // 700 + 1
    assert sorted(r[7] for r in sink.rows.values()) == sorted(f"line {i}" for i in range(5000))
    assert ship({"worker": c}, host="h", sink=sink, settle_s=0).rows == 0


def test_critical_matcher_collector_and_rate_limit():
    row = (b"", parse.parse_stamp("2026-11-25T01:00:00Z"), "h", "odoo-core", "stderr", "ERROR", "odoo.http", "boom", "{}")
    match = alerts.CriticalMatcher(["critical"], [r"Failed to load registry"])
    assert match((*row[:5], "INFO", None, "odoo: Failed to load registry", "{}")) and not match(row)
    col = alerts.CriticalCollector(samples=2, max_groups=2)
    for i in range(5):
        col.add((*row[:7], f"boom {i}", "{}"))
    col.add((*row[:5], "CRITICAL", "odoo.sql_db", "down", "{}"))
    col.add((*row[:5], "ERROR", "third.logger", "x", "{}"))  # past max_groups: folded into one overflow group
    groups = col.as_dict()
    assert groups["odoo-core|odoo.http"]["count"] == 5 and groups["odoo-core|odoo.http"]["samples"] == [
        "[ERROR] boom 0", "[ERROR] boom 1"]
    assert groups["odoo-core|odoo.sql_db"]["level"] == "CRITICAL" and groups[alerts.OVERFLOW_GROUP]["count"] == 1

    msgs, state = alerts.plan_messages({"odoo-core|odoo.http": groups["odoo-core|odoo.http"]}, {}, 1000, 600)
    assert [m["count"] for m in msgs] == [5]
    msgs, state = alerts.plan_messages({"odoo-core|odoo.http": {**groups["odoo-core|odoo.http"], "count": 2}},
                                       state, 1300, 600)
    assert msgs == [] and state["odoo-core|odoo.http"]["held"] == 2
    msgs, state = alerts.plan_messages({}, state, 1700, 600)  # quiet since: the held lines are still reported
    assert msgs[0]["count"] == 2 and msgs[0]["held_before"] == 2 and msgs[0]["samples"] == []
    title, text, level = alerts.render(msgs[0])
    assert title == "2 critical log line(s) in odoo-core / odoo.http" and "2 line(s) held back" in text
    assert level == "danger"
    state = alerts.undelivered(state, msgs[0])  # Mattermost refused: kept for the next run
    assert state["odoo-core|odoo.http"] == {"last_sent": 1000, "held": 2}
    assert alerts.plan_messages({}, state, 1701, 600)[0][0]["count"] == 2


def test_the_collector_hands_over_each_batchs_groups_once_and_merged_groups_add_up():
    """What a committed batch brought is saved at once (a run killed before it posts leaves it to the next run):
    take_unsaved gives each line once; merge_groups adds two saves up."""
    row = (b"", parse.parse_stamp("2026-11-25T01:00:00Z"), "h", "odoo-core", "stderr", "ERROR", "odoo.http", "boom", "{}")
    later = (b"", parse.parse_stamp("2026-11-25T02:00:00Z"), *row[2:5], "CRITICAL", "odoo.http", "worse", "{}")
    col = alerts.CriticalCollector(samples=2)
    col.add(row)
    first = col.take_unsaved()
    assert first["odoo-core|odoo.http"]["count"] == 1 and col.take_unsaved() == {}
    col.add(later)
    col.add((*row[:5], "ERROR", "odoo.sql_db", "down", "{}"))
    second = col.take_unsaved()
    assert set(second) == {"odoo-core|odoo.http", "odoo-core|odoo.sql_db"}
    assert col.as_dict()["odoo-core|odoo.http"]["count"] == 2  # the run's own total is kept for its artifact
    merged = alerts.merge_groups(first, second, samples=2)
    http = merged["odoo-core|odoo.http"]
    assert (http["count"], http["level"], http["samples"]) == (2, "CRITICAL", ["[ERROR] boom", "[CRITICAL] worse"])
    assert http["first"] < http["last"] and http["first"] == first["odoo-core|odoo.http"]["first"]
    assert merged["odoo-core|odoo.sql_db"]["count"] == 1
    assert alerts.merge_groups(merged, merged, samples=2)["odoo-core|odoo.http"]["samples"] == http["samples"]
    assert first["odoo-core|odoo.http"]["count"] == 1  # the inputs are not changed

    # runs that cannot post (Mattermost down) keep adding groups: the pending state stays bounded, nothing uncounted
    def runs(start: int) -> dict:
        return {f"c{i}|l": {"count": 2, "level": "ERROR", "first": "a", "last": "b", "samples": ["x"]}
                for i in range(start, start + 80)}

    pending = alerts.merge_groups(alerts.merge_groups({}, runs(0), max_groups=100), runs(80), max_groups=100)
    assert len(pending) == 101 and pending[alerts.OVERFLOW_GROUP]["count"] == 2 * 60
    assert sum(g["count"] for g in pending.values()) == 2 * 160
    pending = alerts.merge_groups(pending, runs(200), max_groups=100)  # all new again: all into the overflow
    assert len(pending) == 101 and pending[alerts.OVERFLOW_GROUP]["count"] == 2 * 140


def test_alert_state_parse_and_torn_text():
    assert alerts.parse_state(None) == {}
    assert alerts.parse_state('{"g": {"last_sent": 1.0, "held": 3}}') == {"g": {"last_sent": 1.0, "held": 3}}
    assert alerts.parse_state('{"g": ') == {}


def test_options_validate_patterns_and_levels():
    assert LogShippingOptions(critical_levels=["error"]).critical_levels == ["ERROR"]
    with pytest.raises(ValueError, match="not a regular expression"):
        LogShippingOptions(critical_patterns=["(unclosed"])
    with pytest.raises(ValueError):
        LogShippingOptions(batch_size=0)
