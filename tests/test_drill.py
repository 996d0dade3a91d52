"""The weekly restore drill: the nightly verifies encrypted backups with the key offline; the drill restores them
end to end with the identity, fails clearly without it or on a tampered backup, and never leaves a copy behind."""

from __future__ import annotations

import pyrage
import pytest

from flows.drill import compare_files, drill_target, leftover_copies, parse_sums
from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.backup.filestore import StoredFile
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.notify import ALERTED
from tests.fixtures.stack import published as manifests
from tests.fixtures.stack import write_tree as write


def keypair():
    ident = pyrage.x25519.Identity.generate()
    return str(ident.to_public()), str(ident)



def with_keys(tree, recipients, identity=None):
    backup = {**tree["backup"], "age_recipients": recipients}
    if identity is not None:
        backup["age_identity"] = identity
    return {**tree, "backup": backup}



def left_behind(pg, cfg):
    """Drill or restore copies still on the cluster or in odoo-core's filestore volume."""
    dbs = [r[0] for r in pg.execute(r"SELECT datname FROM pg_database WHERE datname LIKE 'drill\_%' "
                                    r"OR datname LIKE '%\_\_restoring\_%' OR datname LIKE '%\_\_before\_%'")]
    with Connections(cfg) as conns:
        dirs = conns.container("odoo-core").run(["ls", f"{cfg.odoo.data_dir}/filestore"]).stdout_text.split()
    return dbs + [f"filestore/{d}" for d in dirs if d.startswith("drill_") or "__" in d]


@pytest.fixture
def encrypted_night(prefect_harness, stack_tree, pg_tls, tmp_path):
    """One nightly backup, encrypted, by a worker WITHOUT the identity. Returns (config, manifest, the stack file
    of that worker, a stack file with the identity, the public key)."""
    from flows.backup import backup

    pub, secret = keypair()
    worker = write(with_keys(stack_tree, [pub]), tmp_path / "worker.yaml")
    backup(stack_file=worker)
    cfg = validate_tree(with_keys(stack_tree, [pub]))
    (manifest,) = manifests(cfg)
    drill = write(with_keys(stack_tree, [pub], secret), tmp_path / "drill.yaml")
    yield cfg, manifest, worker, drill, pub
    # the cluster and the volume are the session's: one failed test must not fail the next one's assertions
    for name in left_behind(pg_tls, cfg):
        if name.startswith("filestore/"):
            with Connections(cfg) as conns:
                conns.container("odoo-core").run(["rm", "-rf", f"{cfg.odoo.data_dir}/{name}"])
        else:
            pg_tls.dropdb(name)


# --- pure -------------------------------------------------------------------------------------------------------

def test_drill_target_is_per_stack_obvious_and_leaves_room_for_restore_copies():
    a, b = drill_target("odoo-erp-prod", "odoo_core"), drill_target("other-stack", "odoo_core")
    assert a.startswith("drill_") and a.endswith("_odoo_core") and a != b
    long = drill_target("odoo-erp-prod", "x" * 63)
    assert len(rs.copy_name(long, "restoring", "20260101T020000Z")) <= 63
    assert rs.copy_name(long, "restoring", "20260101T020000Z").startswith(long)  # not cut: a drop finds it
    assert long != drill_target("odoo-erp-prod", "x" * 62)
    with pytest.raises(ValueError, match="identifier"):
        drill_target("s", "odoo; DROP")


def test_leftover_copies_are_only_this_targets_stamped_copies():
    names = ["drill_ab_odoo_core__restoring_20260101t020000z", "drill_ab_odoo_core__before_20260101t020000z",
             "drill_ab_odoo_core", "drill_ab_odoo_core_x__restoring_20260101t020000z", "odoo_core",
             "odoo_core__before_20260101t020000z"]
    assert leftover_copies(names, "drill_ab_odoo_core") == names[1::-1]


def test_compare_files_names_missing_extra_and_altered():
    files = [StoredFile("ab/ab1", 3, 0, "sha1", "d1"), StoredFile("cd/cd2", 3, 0, "sha1", "d2")]
    assert compare_files(files, parse_sums("d1  ./ab/ab1\nd2  ./cd/cd2\n")) == []
    problems = compare_files(files, {"ab/ab1": "zz", "ef/ef3": "d3"})
    assert len(problems) == 3 and "missing" in problems[0] and "not in the backup" in problems[1]


# --- against the test bed ---------------------------------------------------------------------------------------

@pytest.mark.integration
def test_key_offline_nightly_verifies_and_drill_with_identity_restores_everything(
        encrypted_night, pg_tls, seeded_filestore):
    from flows.drill import restore_drill

    cfg, manifest, _, drill, _ = encrypted_night
    # the worker never had the private key, yet the night is a restore point
    assert manifest.encryption.enabled and manifest.verified, manifest.verification
    assert "plaintext copy" in (manifest.verification.mode or "")
    # a copy last week's killed drill left behind: replaced and dropped, not an error
    target = drill_target(cfg.name, "odoo_core")
    pg_tls.createdb(target)
    pg_tls.createdb(f"{target}__restoring_20200105t200000z")

    out = restore_drill(stack_file=drill)

    result = out["odoo_core"]
    assert result["backup"] == manifest.stamp and result["encrypted"]
    assert result["recover_s"] > 0
    assert result["files"] == manifest.filestore.files == len(seeded_filestore)
    assert left_behind(pg_tls, cfg) == []
    report = latest_artifact("restore-drill")
    assert manifest.stamp in report and "passed" in report and f"| {result['files']} |" in report


def latest_artifact(key):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                            sort=ArtifactSort.CREATED_DESC, limit=1)
    return str(artifact.data)


@pytest.mark.integration
def test_drill_without_identity_fails_saying_where_to_put_the_key(encrypted_night, pg_tls, mattermost):
    from flows.drill import restore_drill

    cfg, manifest, worker, _, _ = encrypted_night
    mattermost.clear()
    with pytest.raises(OpsError, match="BACKUP_AGE_IDENTITY") as failed:
        restore_drill(stack_file=worker)
    assert "prefect-secret:backup-age-identity" in str(failed.value)
    assert manifest.stamp in str(failed.value)
    assert any("Restore drill" in t and "FAILED" in t for t in mattermost.titles())
    assert str(failed.value).endswith(ALERTED)  # posted: the failure automation does not post it again
    assert left_behind(pg_tls, cfg) == []


@pytest.mark.integration
def test_drill_of_tampered_backup_fails_naming_it_and_leaves_nothing(encrypted_night, pg_tls, mattermost):
    from flows.drill import restore_drill

    cfg, manifest, _, drill, _ = encrypted_night
    s3 = spaces.client(cfg.spaces)
    blob = bytearray(spaces.get_bytes(s3, cfg.spaces.bucket, manifest.dump.key))
    blob[len(blob) // 2] ^= 0x01
    spaces.put_bytes(s3, cfg.spaces.bucket, manifest.dump.key, bytes(blob))
    mattermost.clear()
    with pytest.raises(OpsError, match="does not match") as failed:
        restore_drill(stack_file=drill)
    assert f"odoo_core/{manifest.stamp}" in str(failed.value)
    assert any("Restore drill" in t for t in mattermost.titles())
    assert left_behind(pg_tls, cfg) == []
