"""The dead-man's switch, pure part: age against threshold, newest verified backup, newest weekly tag, log lag;
and the alert state machine over a stale n8n export (one alert, one resolved)."""

from __future__ import annotations

from datetime import UTC, datetime

from odoo_stack_ops.backup.manifest import ManifestRef
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.health import checks
from odoo_stack_ops.health import freshness as F  # noqa: N812
from odoo_stack_ops.health.alerting import AlertPolicy, AlertState, delivered, step

H = 3600.0
DAY = 86400.0


def test_age_verdict_fails_only_past_the_threshold_or_when_there_is_none():
    assert F.age_verdict(25.9 * H, 26 * H, "verified backup").status == "ok"
    old = F.age_verdict(26.1 * H, 26 * H, "verified backup", "20261130T180000Z")
    assert old.status == "fail" and "26 h 6 min old" in old.value and "20261130T180000Z" in old.value
    assert old.threshold == "verified backup younger than 26 h 0 min"
    assert F.age_verdict(None, 26 * H, "verified backup").status == "fail"


def ref(stamp: str) -> ManifestRef:
    return ManifestRef.from_key(f"p/manifests/odoo_core/{stamp}.json")


def test_newest_verified_skips_newer_unverified_nights_and_reads_newest_first():
    refs = [ref("20261128T180000Z"), ref("20261130T180000Z"), ref("20261129T180000Z")]
    read = []

    def verified(r: ManifestRef) -> bool:
        read.append(r.stamp)
        return r.stamp != "20261130T180000Z"

    assert F.newest_verified(refs, verified).stamp == "20261129T180000Z"
    assert read == ["20261130T180000Z", "20261129T180000Z"]  # stops at the first verified one
    assert F.newest_verified(refs, lambda r: False) is None
    assert F.newest_verified([], verified) is None


def test_newest_week_tag_uses_the_annotated_time_and_a_lightweight_tag_s_week_end():
    week_end = F.week_end("n8n-2026-W48", "Asia/Singapore")
    assert week_end == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)  # Monday 2026-11-30 00:00 in Singapore
    assert F.week_end("release-1", "UTC") is None and F.week_end("n8n-2026-W60", "UTC") is None
    annotated = datetime(2026, 11, 29, 3, 0, tzinfo=UTC).timestamp()
    tags = [("n8n-2026-W47", "commit", 0.0), ("n8n-2026-W48", "tag", annotated), ("v1", "tag", 9e9)]
    assert F.newest_week_tag(tags, "UTC") == ("n8n-2026-W48", annotated)
    # a lightweight tag on a month-old commit (nothing changed that week) is as young as its week
    assert F.newest_week_tag([("n8n-2026-W48", "commit", 0.0)], "Asia/Singapore") == ("n8n-2026-W48",
                                                                                      week_end.timestamp())
    assert F.newest_week_tag([("v1", "tag", 1.0)], "UTC") is None


def test_log_lag_is_measured_between_log_stamps_and_the_worst_stream_decides():
    s = 1_000_000_000
    lags = F.cursor_lags({("web", "stdout"): 1000 * s, ("web", "stderr"): 500 * s, ("db", "stdout"): 10 * s},
                         {("web", "stdout"): 990 * s, ("web", "stderr"): 600 * s, ("db", "stdout"): 10 * s})
    assert lags == {("web", "stdout"): 10.0, ("web", "stderr"): 0.0, ("db", "stdout"): 0.0}
    assert F.lag_verdict(lags).status == "ok"
    late = F.lag_verdict({("web", "stdout"): 16 * 60.0, ("db", "stdout"): 60.0})
    assert late.status == "fail" and "16 min behind (web/stdout)" in late.value
    assert F.cursor_lags({("web", "stdout"): 5 * s}, {}) == {("web", "stdout"): None}  # logged, never shipped
    # a stream whose first line came after the last pass (the sweep's own request in an access log): measured from
    # the host's newest cursor, not "never shipped"
    assert F.cursor_lags({("web", "stderr"): 130 * s}, {("web", "stdout"): 100 * s}) == {("web", "stderr"): 30.0}
    never = F.lag_verdict({("web", "stdout"): None, ("db", "stdout"): 0.0})
    assert never.status == "fail" and "never shipped: web/stdout" in never.value
    assert F.lag_verdict({}).status == "ok"


def test_stale_n8n_export_alerts_once_then_resolves_once():
    """Sweeps over a week-old tag that nobody renews, then a new export: one alert, one resolved."""
    cfg = validate_tree({"database": {"host": "db", "sslmode": "require"}, "spaces": {"bucket": "b"}, "git": {"n8n_remote": "/r.git"},
                         "backup": {"timezone": "UTC"}, "ssh": {"host": "droplet"}})
    made = datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp()
    tags = [("n8n-2026-W47", "tag", made)]
    reads = []

    def read(_cfg):
        reads.append(1)
        return list(tags)

    policy, state, samples, actions = AlertPolicy(fail_after=3, ok_after=2), AlertState(), {}, []
    now = made + 8 * DAY - 5 * 60  # 5 minutes before it turns stale
    for minute in range(40):
        if minute == 25:  # the export ran again
            tags.append(("n8n-2026-W48", "tag", now))
            samples = {}  # what a new remote read would see: the check re-reads after N8N_RECHECK_S anyway
        reading = checks.n8n_freshness(cfg, samples.get("n8n_tag") or {}, now, read)
        samples = reading.samples
        [result] = reading.results
        state, action = step(state, result.status, result.value, now, policy)
        if action:
            actions.append((minute, action))
            state = delivered(state, action, True, now)
        now += 60
    assert actions == [(8, "alert"), (26, "resolve")]  # stale from minute 6, third failure at 8
    assert len(reads) == 3  # minute 0, minute 15 (N8N_RECHECK_S later), the new export's read at 25
