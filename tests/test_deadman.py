"""The dead-man's switch in real health sweeps: a backup that never ran (the newest verified manifest in Spaces
is older than backup.max_age_h) raises exactly one alert over several sweeps and exactly one resolved once a
fresh verified backup is published; the weekly n8n tag is read from a real git remote; the log cursor from
a real ops.log_cursors table against a real container's log."""

from __future__ import annotations

import copy
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.config import load_config, validate_tree
from odoo_stack_ops.health import checks
from odoo_stack_ops.sandbox.mattermost import MattermostStandIn

pytestmark = pytest.mark.integration


@pytest.fixture
def mm():
    server = MattermostStandIn()
    yield server
    server.stop()


def write_stack(stack_tree, tmp_path, mm, **over) -> str:
    tree = copy.deepcopy(stack_tree)
    tree["containers"] = {}  # only what this test is about (plus the database and host checks every sweep runs)
    tree["mattermost"] = {"webhook_url": mm.url}
    tree["state_dir"] = str(tmp_path / "state")
    for section, values in over.items():
        tree.setdefault(section, {}).update(values)
    path = tmp_path / "deadman-stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o600)
    return str(path)


def publish(bucket: Bucket, database: str, taken: datetime, verified: bool) -> None:
    """A manifest as the nightly publishes it (the check reads only manifests, never the dump)."""
    st = layout.stamp(taken)
    dump = mf.DumpRecord(key=layout.dump_key(bucket.prefix, database, st), raw_bytes=3, raw_sha256="r",
                         stored_bytes=1, stored_sha256="s")
    doc = mf.build_manifest(stack="sandbox", database=database, st=st, started_at=taken,
                            finished_at=taken + timedelta(minutes=5), facts={}, dump=dump,
                            filestore=mf.FilestoreRecord(manifest_key=layout.filestore_manifest_key(bucket.prefix, database, st)),
                            verification=mf.Verification(ok=verified), encryption=None)
    bucket.put_bytes(layout.manifest_key(bucket.prefix, database, st), mf.encode(doc), "application/json")


def test_stale_backup_alerts_once_over_sweeps_and_resolves_once_after_a_fresh_verified_backup(
        prefect_harness, stack_tree, mm, tmp_path):
    from flows.health import health_sweep

    path = write_stack(stack_tree, tmp_path, mm, backup={"databases": ["odoo_core"], "max_age_h": 26})
    bucket = Bucket.open(load_config(path).spaces)
    now = datetime.now(UTC)
    publish(bucket, "odoo_core", now - timedelta(hours=50), verified=True)
    publish(bucket, "odoo_core", now - timedelta(hours=27), verified=True)  # last night's backup is 27 h old
    publish(bucket, "odoo_core", now - timedelta(hours=2), verified=False)  # tonight's, but not a restore point

    def sweep() -> dict:
        out = health_sweep(stack_file=path, container_stats=False)
        return {r["check"]: r for r in out["results"]}

    for n in range(5):
        row = sweep()["backup.fresh.odoo_core"]
        assert row["status"] == "fail" and row["value"].startswith("27 h")
        assert len(mm.messages) == (1 if n >= 2 else 0)  # quiet, the alert on the 3rd sweep, quiet again
    alert = mm.messages[0]["attachments"][0]
    assert alert["title"] == "ALERT: backup.fresh.odoo_core on sandbox"
    fields = {f["title"]: f["value"] for f in alert["fields"]}
    assert fields["threshold"] == "verified backup younger than 26 h 0 min"
    assert layout.stamp(now - timedelta(hours=27)) in alert["text"]  # the evidence names the manifest

    publish(bucket, "odoo_core", now - timedelta(minutes=1), verified=True)
    for _ in range(3):
        row = sweep()["backup.fresh.odoo_core"]
    assert row["status"] == "ok" and layout.stamp(now - timedelta(minutes=1)) in row["value"]
    assert [[a["title"] for a in m["attachments"]] for m in mm.messages] == [
        ["ALERT: backup.fresh.odoo_core on sandbox"], ["RESOLVED: backup.fresh.odoo_core on sandbox"]]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def test_n8n_week_tags_are_read_from_the_remote_with_the_time_the_export_made_them(tmp_path, git_remote):
    from odoo_stack_ops.gitops import Repo

    cfg = validate_tree({"database": {"host": "db", "sslmode": "require"}, "spaces": {"bucket": "b"},
                         "ssh": {"host": "droplet"}, "git": {"n8n_remote": str(git_remote)},
                         "state_dir": str(tmp_path / "state")})
    work = Repo(tmp_path / "work", str(git_remote), cfg.git)
    work.sync()
    (work.path / "a.json").write_text("{}")
    assert work.commit_if_changed("one")
    work.tag("n8n-2026-W47")  # as the export tags: annotated, so the tag carries when it was made
    work.push(tags=["n8n-2026-W47"])
    made = time.time()
    assert git("-C", str(git_remote), "cat-file", "-t", "n8n-2026-W47").strip() == "tag"

    [(name, kind, created)] = checks.n8n_week_tags(cfg)
    assert (name, kind) == ("n8n-2026-W47", "tag") and abs(created - made) < 60
    fresh = checks.n8n_freshness(cfg, {}, made + 60)
    assert fresh.results[0].status == "ok" and fresh.samples["n8n_tag"]["tag"] == "n8n-2026-W47"
    stale = checks.n8n_freshness(cfg, {}, made + 8 * 86400 + 60)
    assert stale.results[0].status == "fail" and stale.results[0].value.startswith("192 h")


def test_log_cursor_lag_against_a_real_container_log(pg, docker_client, sandbox_image, unique):
    """Never shipped fails; after a real shipping pass it is ok; a cursor 20 minutes behind the log fails."""
    from odoo_stack_ops.logs.parse import stamp_ns
    from odoo_stack_ops.logs.ship import ship
    from odoo_stack_ops.logs.sink_pg import PgSink

    pg.createdb(f"lag{unique}")
    sink = PgSink(pg.conninfo(f"lag{unique}"))
    sink.migrate()
    project = f"lag{unique}"
    c = docker_client.containers.run(sandbox_image, ["sh", "-c", "echo one; echo two; exec sleep 100000"], detach=True,
                                     init=True, name=f"{project}-web-1", network_mode="host",
                                     labels={"com.docker.compose.service": "web", "com.docker.compose.project": project})
    try:
        deadline = time.monotonic() + 20
        while b"two" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
        never = checks.log_lag(docker_client, sink, "sandbox", ["web"], project)
        assert never.status == "fail" and never.value == f"never shipped: {c.name}/stdout"

        ship({"web": c}, host="sandbox", sink=sink, settle_s=0)
        shipped = checks.log_lag(docker_client, sink, "sandbox", ["web"], project)
        assert shipped.status == "ok" and shipped.value == f"0 s behind ({c.name}/stdout)", shipped

        newest = stamp_ns(c.logs(tail=1, timestamps=True).decode().split(" ", 1)[0])
        with sink.conn.transaction():  # the shipper stalled 20 minutes of this container's log ago
            sink.conn.execute("UPDATE ops.log_cursors SET stamp_ns = %s", (newest - 20 * 60 * 10**9,))
        late = checks.log_lag(docker_client, sink, "sandbox", ["web"], project)
        assert late.status == "fail" and late.value == f"20 min behind ({c.name}/stdout)"
    finally:
        c.remove(force=True)
        sink.close()
