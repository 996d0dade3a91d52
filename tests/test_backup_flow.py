"""backup/nightly and restore against the real test bed: TLS PostgreSQL, sshd + podman (Docker over SSH), S3."""

from __future__ import annotations

import json
import zipfile

import psycopg
import pytest

from odoo_stack_ops.backup import layout, spaces
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.sandbox import odoo_data
from odoo_stack_ops.sandbox.images import write_files
from tests.checks import task_runs
from tests.fixtures.stack import published as manifests

pytestmark = pytest.mark.integration



def container_files(docker_executor, root):
    """{relative path: bytes} of every file under root inside odoo-core."""
    listing = docker_executor.run(["sh", "-c", f'cd "{root}" && find . -type f -print0'], check=False)
    out = {}
    for raw in filter(None, listing.stdout.split(b"\0")):
        rel = raw.decode().removeprefix("./")
        out[rel] = docker_executor.run(["cat", f"{root}/{rel}"]).stdout
    return out


@pytest.fixture
def backup_flow(prefect_harness):
    from flows.backup import backup

    return backup


@pytest.fixture
def restore_flow(prefect_harness):
    from flows.restore import restore

    return restore


def test_round_trip_database_and_filestore(backup_flow, restore_flow, stack_config, stack_tree, pg_tls,
                                           docker_executor, seeded_filestore, tmp_path):
    import yaml

    stack_file = tmp_path / "zip.yaml"
    stack_file.write_text(yaml.safe_dump({**stack_tree, "restore": {"export_dir": str(tmp_path / "exports")}}))
    result = backup_flow(stack_file=str(stack_file))
    key = result["odoo_core"]
    (m,) = manifests(stack_config)
    assert layout.manifest_key(stack_config.spaces.prefix, "odoo_core", m.stamp) == key
    assert m.verified and m.verification.ok, m.verification
    assert m.modules["base"] == "18.0.1.3" and m.odoo_version == "18.0"
    assert m.database_facts.tables > 300 and m.database_facts.large_objects == 3
    assert m.filestore.files == len(seeded_filestore) and m.dump.stored_bytes > 0

    state = restore_flow(stack_file=str(stack_file), database="odoo_core", target_database="restored_core",
                         odoo_zip=True, return_state=True)
    out = state.result()
    # the filestore leg runs beside the database's on a thread of its own, still a task run of this flow run
    ((_unpacked, history),) = task_runs(state.state_details.flow_run_id)["restore-filestore-copy"]
    assert history == ["Pending", "Running", "Completed"], history
    assert out["database"] == "restored_core" and out["replaced_copy"].startswith("none")
    assert out["odoo_zip"] == str(tmp_path / "exports" / f"odoo_core-{m.stamp}.zip")
    with psycopg.connect(**pg_tls.conninfo("odoo_core")) as a, psycopg.connect(**pg_tls.conninfo("restored_core")) as b:
        assert odoo_data.table_checksums(a) == odoo_data.table_checksums(b)
    restored = container_files(docker_executor, "/var/lib/odoo/filestore/restored_core")
    assert restored == seeded_filestore

    with zipfile.ZipFile(out["odoo_zip"]) as zf:
        names = set(zf.namelist())
        assert {"dump.sql", "manifest.json"} <= names
        assert {f"filestore/{p}" for p in seeded_filestore} <= names
        assert json.loads(zf.read("manifest.json"))["modules"]["base"] == "18.0.1.3"
        with zf.open("dump.sql") as fh:
            head = fh.read(200_000).decode("utf-8", "replace")
        assert "CREATE TABLE" in head

    with pytest.raises(OpsError, match="already exists"):
        restore_flow.fn(stack_file=str(stack_file), database="odoo_core", target_database="restored_core",
                        restore_filestore=False)
    pg_tls.dropdb("restored_core")
    docker_executor.run(["rm", "-rf", "/var/lib/odoo/filestore/restored_core"])


def test_second_night_uploads_only_new_files(backup_flow, stack_config, stack_file, docker_executor):
    backup_flow(stack_file=stack_file)
    s3 = spaces.client(stack_config.spaces)
    before = {o["Key"]: o["Size"] for o in spaces.iter_objects(s3, stack_config.spaces.bucket, "odoo-erp-prod/packs/")}
    new = odoo_data.make_filestore(2, seed=99, nested_extra=False)
    container = docker_executor.container
    write_files(container, "/var/lib/odoo/filestore/odoo_core", new)
    try:
        backup_flow(stack_file=stack_file)
    finally:
        docker_executor.run(["rm", "-f", *[f"/var/lib/odoo/filestore/odoo_core/{p}" for p in new]])
    after = {o["Key"]: o["Size"] for o in spaces.iter_objects(s3, stack_config.spaces.bucket, "odoo-erp-prod/packs/")}
    added = set(after) - set(before)
    assert len(added) == 1 and sum(after[k] for k in added) == sum(len(v) for v in new.values())  # one new pack
    first, second = manifests(stack_config)
    assert second.filestore.new_objects == 2
    assert second.filestore.new_bytes == sum(len(v) for v in new.values())
    assert second.filestore.files == first.filestore.files + 2


def test_lifecycle_safety_net_and_a_rule_that_would_delete_backups(backup_flow, stack_config, stack_file,
                                                                   mattermost):
    from odoo_stack_ops.backup import lifecycle

    s3, bucket = spaces.client(stack_config.spaces), stack_config.spaces.bucket
    theirs = [{"ID": "logs-7d", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}},
              {"ID": "everything-30d", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 30}}]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": theirs})
    mattermost.clear()
    backup_flow(stack_file=stack_file)
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert set(rules) == {"logs-7d", "everything-30d", lifecycle.RULE_ID}  # theirs kept, ours added
    assert rules[lifecycle.RULE_ID]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert "Expiration" not in rules[lifecycle.RULE_ID]
    assert lifecycle.plan(list(rules.values()), "odoo-erp-prod/", 3).rules is None  # next night puts nothing
    warned = [m for m in mattermost.messages if "needs attention" in str(m)]
    assert len(warned) == 1 and "everything-30d" in str(warned[0]) and "logs-7d" not in str(warned[0])
    assert [m.verified for m in manifests(stack_config)] == [True]  # the night itself went on


def test_staging_refresh_neutralizes_odoo_dev(backup_flow, restore_flow, stack_file, pg_tls, docker_executor):
    backup_flow(stack_file=stack_file)
    restore_flow(stack_file=stack_file, database="odoo_core", staging=True)
    rows = pg_tls.execute("SELECT count(*) FILTER (WHERE active) FROM ir_mail_server", "odoo_dev")
    assert rows[0][0] == 0
    crons = pg_tls.execute("SELECT cron_name, active FROM ir_cron ORDER BY id", "odoo_dev")
    assert crons[0][1] is True and all(not active for _, active in crons[1:])  # autovacuum stays on
    flag = pg_tls.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'", "odoo_dev")
    assert flag == [("True",)]
    uuid_core = pg_tls.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'", "odoo_core")
    uuid_dev = pg_tls.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'", "odoo_dev")
    assert uuid_core != uuid_dev
    assert pg_tls.execute("SELECT count(*) FROM ir_mail_server WHERE active", "odoo_core")[0][0] == 1
    docker_executor.run(["rm", "-rf", "/var/lib/odoo/filestore/odoo_dev"])


def test_staging_refresh_never_targets_production(restore_flow, stack_file):
    with pytest.raises(OpsError, match="production"):
        restore_flow.fn(stack_file=stack_file, database="odoo_core", target_database="odoo_core", staging=True)


def test_dump_inside_odoo_core_as_the_seed_does(backup_flow, stack_tree, tmp_path):
    """backup.dump_on=container: pg_dump and pg_restore run in odoo-core through the Docker API over SSH."""
    import yaml

    from odoo_stack_ops.config import validate_tree

    tree = {**stack_tree, "backup": {**stack_tree["backup"], "dump_on": "container"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    backup_flow(stack_file=str(path))
    (m,) = manifests(validate_tree(tree))
    assert m.verified and m.dump.pg_dump_version.startswith("pg_dump (PostgreSQL) 15")


def test_retention_artifact_says_which_identity_each_backup_needs(stack_config, backup_flow, stack_file):
    from tasks.retention import apply_retention

    backup_flow(stack_file=stack_file)
    out = apply_retention.fn(stack_config, last_run_ok=True, dry_run=True)
    assert out["rows"] and all(r["needs_identity"] == "none (not encrypted)" for r in out["rows"])
