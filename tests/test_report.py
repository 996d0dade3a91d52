"""The weekly report over a generated week: 7 backup nights in Spaces (night 6 much smaller), a minute-by-minute
sweep history with one outage and log lines with an error burst in real PostgreSQL; figures checked against
values computed here without pandas, the size-drop alarm, the PNGs, and the artifact's charts loaded by a real
headless chromium from a real Prefect server."""

from __future__ import annotations

import io
import json
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
import pytest
import requests
from prefect.logging import disable_run_logger
from pydantic import SecretStr

from odoo_stack_ops import history
from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.health.checks import CheckResult
from odoo_stack_ops.health.history import history_rows, write_history
from odoo_stack_ops.logs.sink_pg import migration_sql as logs_migration
from odoo_stack_ops.report.tables import MIB, Window, trend_alarms
from tasks.report import build_report, gather_history

TZ = "Asia/Singapore"
DB = "odoo_core"
CHECKS = ("http.odoo-core", "db.select", "host.disk:/")
OUTAGE = ("http.odoo-core", 3000, 17)  # check, first failing minute of the week, minutes down
BURST = ("odoo-core", 2 * 1440 + 600, 250)  # container, minute of the week, ERROR lines in that minute


def stored(i: int) -> int:
    return (50 if i == 5 else 100 + i) * MIB  # night 6 (i = 5) stores half


def night(i: int, taken: datetime) -> mf.Manifest:
    st = layout.stamp(taken)
    return mf.Manifest(
        stack="report-test", database=DB, stamp=st, started_at=taken, finished_at=taken + timedelta(seconds=20 + i),
        duration_s=20 + i, verified=True, verification=mf.Verification(ok=True, duration_s=3),
        dump=mf.DumpRecord(key=layout.dump_key("p", DB, st), raw_bytes=3 * stored(i), raw_sha256="0" * 64,
                           stored_bytes=stored(i), stored_sha256="0" * 64, duration_s=10 + i),
        filestore=mf.FilestoreRecord(manifest_key=layout.filestore_manifest_key("p", DB, st)))


@pytest.fixture(scope="module")
def week(pg, s3, mattermost, tmp_path_factory):
    """The generated week in a fresh bucket and ops database; returns (config, now, nights, sweep rows, log rows)."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=7)
    name = f"ops_report_{uuid.uuid4().hex[:8]}"
    pg.createdb(name)
    info = pg.conninfo(name)
    dsn = f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/{name}?sslmode=disable"
    tree = {
        "name": "report-test", "docker": {"mode": "local", "base_url": "unix:///nonexistent.sock"},
        "database": {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password.get_secret_value(),
                     "name": DB, **pg.tls_settings()},
        "spaces": {"endpoint": s3.endpoint, "bucket": s3.create_bucket(f"t-{uuid.uuid4().hex[:12]}"),
                   "prefix": "odoo-erp-prod", "access_key_id": s3.access_key.get_secret_value(),
                   "secret_access_key": s3.secret_key.get_secret_value()},
        "supabase": {"db_dsn": dsn}, "mattermost": {"webhook_url": mattermost.url},
        "backup": {"timezone": TZ}, "state_dir": str(tmp_path_factory.mktemp("state")),
    }
    cfg = validate_tree(tree)
    bucket = Bucket.open(cfg.spaces)
    nights = [night(i, start + timedelta(days=i, hours=1)) for i in range(7)]
    for m in nights:
        bucket.put_bytes(layout.manifest_key(bucket.prefix, DB, m.stamp), mf.encode(m))
    history.record(bucket, "drills", {"database": DB, "recover_s": 42.5}, DB)
    history.record(bucket, "upgrades", {"database": DB, "result": "upgraded", "downtime_s": 95.0,
                                        "plan": {"install": [], "upgrade": ["ipai_finance_ppm"]}}, DB)

    sweeps = []  # (minute, check, status)
    for minute in range(7 * 1440):
        for check in CHECKS:
            down = check == OUTAGE[0] and OUTAGE[1] <= minute < OUTAGE[1] + OUTAGE[2]
            status = "fail" if down else ("warn" if check == "host.disk:/" and minute % 100 == 0 else "ok")
            sweeps.append((minute, check, status))
    rows = []
    for minute, check, status in sweeps:
        rows += history_rows([CheckResult(check, status, "v")], cfg.name, start + timedelta(minutes=minute, seconds=5))
    write_history(dsn, rows)

    logs = [(minute, c, "INFO") for minute in range(0, 7 * 1440, 3) for c in ("odoo-core", "nginx-proxy")]
    logs += [(minute, "nginx-proxy", "ERROR") for minute in range(7, 7 * 1440, 1440)]  # one a day
    logs += [(BURST[1], BURST[0], "ERROR")] * BURST[2]
    with psycopg.connect(dsn) as conn:
        conn.execute(logs_migration())
        with conn.cursor().copy("COPY ops.logs (id, ts, host, container, stream, level, message) FROM STDIN") as cp:
            for minute, container, level in logs:
                cp.write_row((uuid.uuid4(), start + timedelta(minutes=minute, seconds=7), cfg.name, container,
                              "stderr", level, "line"))
    return SimpleNamespace(cfg=cfg, now=now, nights=nights, sweeps=sweeps, logs=logs, tree=tree)


def make_report(cfg, now):
    window = Window.ending(now, 7, TZ)
    with disable_run_logger():
        return build_report.fn(cfg, window, gather_history.fn(cfg, window))


def test_the_week_s_tables_hold_the_figures_computed_independently(week):
    cfg, now, nights, sweeps, logs = week.cfg, week.now, week.nights, week.sweeps, week.logs
    report = make_report(cfg, now)

    backups = report.backups.set_index("database").loc[DB]
    assert backups["nights"] == 7 and backups["verified_pct"] == 100
    assert backups["stored_mib"] == pytest.approx(stored(6) / MIB) and backups["raw_mib"] == pytest.approx(
        3 * stored(6) / MIB)
    assert backups["duration_s"] == pytest.approx(statistics.median(m.duration_s for m in nights))
    assert backups["throughput_mib_s"] == pytest.approx(
        statistics.median(m.dump.raw_bytes / MIB / m.dump.duration_s for m in nights), abs=0.01)
    assert backups["newest_verified_age_h"] == pytest.approx((now - nights[-1].started_at).total_seconds() / 3600,
                                                             abs=0.01)
    assert backups["drill_recover_s"] == 42.5

    checks = report.checks.set_index("check")
    for check in CHECKS:
        own = [s for _, c, s in sweeps if c == check]
        assert checks.loc[check, "sweeps"] == len(own)
        assert checks.loc[check, "uptime_pct"] == pytest.approx(100 * (1 - own.count("fail") / len(own)), abs=1e-3)
    assert checks.loc[OUTAGE[0], "incidents"] == 1 and checks.loc[OUTAGE[0], "mttr_min"] == OUTAGE[2]
    assert checks.loc["host.disk:/", "incidents"] == 0  # warnings are not outages
    assert not checks["failing_now"].any()

    start = now - timedelta(days=7)
    day = lambda minute: (start + timedelta(minutes=minute, seconds=7)).astimezone(ZoneInfo(TZ)).date()  # noqa: E731
    errors = Counter((day(m), c) for m, c, level in logs if level == "ERROR")
    got = {(d.date(), c): n for d, row in report.errors.iterrows() for c, n in row.items() if n}
    assert got == dict(errors)
    per = report.logs.set_index(["container", "level"])
    lines = Counter((c, level) for _, c, level in logs)
    assert per["lines"].to_dict() == dict(lines)
    assert per.loc[("odoo-core", "ERROR"), "error_lines_per_day"] == pytest.approx(BURST[2] / 7, abs=0.01)

    assert report.upgrades[["database", "downtime_s"]].to_dict("records") == [{"database": DB, "downtime_s": 95.0}]


def test_the_size_drop_raises_one_alarm_in_report_and_summary(week):
    cfg, now, nights = week.cfg, week.now, week.nights
    report = make_report(cfg, now)
    assert [(a.kind, a.stamp) for a in report.alarms] == [("size-drop", nights[5].stamp)]
    assert "51% below the trailing median 102.0 MiB" in report.alarms[0].text  # median of nights 1-5
    from odoo_stack_ops.report.build import markdown, summary

    assert f"**size-drop** {DB} `{nights[5].stamp}`" in markdown(report, {}, "s3://x/")
    title, text, level = summary(report)
    assert "1 trend alarm(s)" in title and nights[5].stamp in text and level == "warning"


def test_a_sweep_records_every_result_and_a_dead_history_database_is_only_a_warning(week, pg, caplog):
    from tasks.health import record_checks

    cfg = week.cfg
    # whole milliseconds: Python and PostgreSQL round a float's microseconds each their own way (1 µs apart at times)
    when = round(time.time(), 3)
    results = [CheckResult("http.odoo-core", "fail", "502", "200", "boom", 0.2), CheckResult("db.select", "ok", "1")]
    with disable_run_logger():
        assert record_checks.fn(cfg, results, when) == 2
    got = pg.execute(f"SELECT check_name, status, value, evidence FROM ops.health_checks WHERE ts = "
                     f"to_timestamp({when}) ORDER BY check_name", cfg.supabase.db_dsn.get_secret_value()
                     .rsplit("/", 1)[1].split("?")[0])
    assert got == [("db.select", "ok", "1", None), ("http.odoo-core", "fail", "502", "boom")]
    dead = cfg.model_copy(update={"supabase": cfg.supabase.model_copy(
        update={"db_dsn": SecretStr("postgresql://nobody@127.0.0.1:1/ops?sslmode=disable")})})
    assert record_checks.fn(dead, results, when) == 0
    assert "health history not written" in caplog.text


def test_alarm_rules_on_their_thresholds():
    """Each rule against the trailing median of the nights before (its own night excluded)."""
    end = pd.Timestamp("2026-11-30T00:00Z")
    window = Window.ending(end.to_pydatetime(), 3, TZ)

    def nights(last_size: float, last_duration: float, verified: bool = True) -> pd.DataFrame:
        rows = [(DB, f"n{i}", end - pd.Timedelta(days=10 - i), True, 0, 100.0, 1.0, 10.0) for i in range(9)]
        rows.append((DB, "last", end - pd.Timedelta(hours=5), verified, 0, last_size, 1.0, last_duration))
        return pd.DataFrame(rows, columns=["database", "stamp", "taken_at", "verified", "raw_bytes", "stored_bytes",
                                           "dump_s", "duration_s"])

    kinds = lambda frame: [(a.kind, a.stamp) for a in trend_alarms(frame, window)]  # noqa: E731
    assert kinds(nights(100, 10)) == []
    assert kinds(nights(71, 19.9)) == []  # 29 % down, 1.99x: inside the limits
    assert kinds(nights(69, 10)) == [("size-drop", "last")]
    assert kinds(nights(151, 10)) == [("size-rise", "last")]
    assert kinds(nights(149, 21)) == [("slow", "last")]
    assert kinds(nights(100, 10, verified=False)) == [("unverified", "last")]


def test_the_charts_are_real_pngs(week):
    from PIL import Image

    cfg, now = week.cfg, week.now
    charts = make_report(cfg, now).charts()
    assert set(charts) == {"backups", "uptime", "errors"}
    for name, png in charts.items():
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 250, name
        assert len(png) > 15_000, f"{name}: {len(png)} bytes is too little for a chart with data"
        assert sum(n > 0 for n in image.convert("L").histogram()) > 20, f"{name} is (nearly) blank"


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory):
    """A real `prefect server start` (the test harness serves no UI)."""
    from odoo_stack_ops.prefect_local import LocalPrefect

    server = LocalPrefect(tmp_path_factory.mktemp("prefect-ui"))
    try:
        server.start(timeout=120)
        yield server
    finally:
        server.stop()


def test_the_report_artifact_shows_its_charts_in_a_real_browser(week, prefect_ui, mattermost, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(json.dumps(week.tree))
    stack_file.chmod(0o600)
    mattermost.clear()
    prefect_ui.python("-c", f"from flows.report import ops_report; ops_report(stack_file={str(stack_file)!r})",
                      timeout=240)
    titles = mattermost.titles()
    assert any("Weekly ops report of report-test: 1 trend alarm(s)" in t for t in titles), titles
    found = requests.post(f"{prefect_ui.api}/artifacts/filter",
                          json={"artifacts": {"key": {"any_": ["ops-report"]}}}, timeout=10).json()
    assert len(found) == 1 and found[0]["data"].count("data:image/png;base64,") == 3

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(f"{prefect_ui.url}/artifacts/artifact/{found[0]['id']}")
        deadline, images = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            images = browser.execute_script(
                "return Array.from(document.querySelectorAll('img[alt]')).map(i => [i.alt, i.naturalWidth])")
            if sum(width > 0 for _, width in images) >= 3:
                break
            time.sleep(0.5)
    finally:
        browser.quit()
    loaded = {alt: width for alt, width in images if width > 0}
    assert {"backups", "uptime", "errors"} <= set(loaded), images
    assert all(width == 900 for width in loaded.values()), loaded

