"""Backups encrypted on the worker (age): round trip, the stock `age` CLI, wrong key, tampering, rotation."""

from __future__ import annotations

import subprocess

import psycopg
import pyrage
import pytest

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.backup.crypto import fingerprint
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.sandbox import odoo_data
from tests.fixtures.stack import published as manifests
from tests.fixtures.stack import write_tree as write

pytestmark = pytest.mark.integration


def keypair():
    ident = pyrage.x25519.Identity.generate()
    return str(ident.to_public()), str(ident)


def with_keys(tree, recipients, identity):
    return {**tree, "backup": {**tree["backup"], "age_recipients": recipients, "age_identity": identity}}




def test_encrypted_round_trip_by_hand_with_age_and_pg_restore(prefect_harness, stack_tree, pg_tls, tmp_path):
    from flows.backup import backup
    from flows.restore import restore

    pub, secret = keypair()
    tree = with_keys(stack_tree, [pub], secret)
    path = write(tree, tmp_path / "s.yaml")
    backup(stack_file=path)
    cfg = validate_tree(tree)
    (m,) = manifests(cfg)
    assert m.verified, m.verification
    assert m.encryption.enabled and m.encryption.fingerprints == [fingerprint(pub)]
    assert secret not in m.model_dump_json()
    s3 = spaces.client(cfg.spaces)
    keys = [o["Key"] for o in spaces.iter_objects(s3, cfg.spaces.bucket, cfg.spaces.prefix + "/")]
    dumps = [k for k in keys if "/db/" in k]
    assert dumps and all(k.endswith(".age") for k in dumps)
    assert spaces.get_bytes(s3, cfg.spaces.bucket, dumps[0]).startswith(b"age-encryption.org/v1")
    files = rs.filestore_files(spaces.Bucket.open(cfg.spaces), m)
    assert files and all(f.pack for f in files)
    for f in files:  # every file's blob in its pack is age-encrypted on its own
        key, offset, length = f.location(cfg.spaces.prefix, m.object_tag)
        blob = b"".join(spaces.read_chunks(s3, cfg.spaces.bucket, key, offset=offset, length=length))
        assert blob.startswith(b"age-encryption.org/v1") and len(blob) > f.size

    # a person at 3 a.m. without this project: age -d, zstd -d, pg_restore
    (tmp_path / "key.txt").write_text(secret + "\n")
    (tmp_path / "dump.zst.age").write_bytes(spaces.get_bytes(s3, cfg.spaces.bucket, m.dump.key))
    subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), "-o", str(tmp_path / "dump.zst"),
                    str(tmp_path / "dump.zst.age")], check=True)
    subprocess.run(["zstd", "-q", "-d", str(tmp_path / "dump.zst"), "-o", str(tmp_path / "dump.custom")], check=True)
    pg_tls.createdb("by_hand")
    env = {"PGPASSWORD": pg_tls.password.get_secret_value(), "PGSSLMODE": "require", "PATH": "/usr/bin:/bin"}
    subprocess.run(["pg_restore", "-h", pg_tls.host, "-p", str(pg_tls.port), "-U", pg_tls.user, "--no-owner",
                    "-d", "by_hand", str(tmp_path / "dump.custom")], check=True, env=env)
    with psycopg.connect(**pg_tls.conninfo("odoo_core")) as a, psycopg.connect(**pg_tls.conninfo("by_hand")) as b:
        assert odoo_data.table_checksums(a) == odoo_data.table_checksums(b)
    pg_tls.dropdb("by_hand")

    # the restore flow decrypts too, filestore included
    out = restore(stack_file=path, database="odoo_core", target_database="enc_restored", restore_filestore=False)
    assert out["database"] == "enc_restored"
    pg_tls.dropdb("enc_restored")

    # wrong identity: a clear error naming the key the backup needs
    _, other = keypair()
    wrong = write(with_keys(stack_tree, [pub], other), tmp_path / "wrong.yaml")
    with pytest.raises(OpsError, match=fingerprint(pub)):
        restore.fn(stack_file=wrong, database="odoo_core", target_database="never_made", restore_filestore=False)
    assert pg_tls.execute("SELECT count(*) FROM pg_database WHERE datname = 'never_made'")[0][0] == 0

    # tampering with the stored dump is detected before anything is restored
    blob = bytearray(spaces.get_bytes(s3, cfg.spaces.bucket, m.dump.key))
    blob[len(blob) // 2] ^= 0x01
    spaces.put_bytes(s3, cfg.spaces.bucket, m.dump.key, bytes(blob))
    with pytest.raises(VerificationFailed, match="does not match"):
        restore.fn(stack_file=path, database="odoo_core", target_database="tampered", restore_filestore=False)
    assert pg_tls.execute("SELECT count(*) FROM pg_database WHERE datname = 'tampered'")[0][0] == 0


def test_dedup_and_key_rotation(prefect_harness, stack_tree, pg_tls, tmp_path):
    from flows.backup import backup
    from flows.restore import restore

    old_pub, old_secret = keypair()
    old = write(with_keys(stack_tree, [old_pub], old_secret), tmp_path / "old.yaml")
    backup(stack_file=old)
    backup(stack_file=old)
    cfg = validate_tree(with_keys(stack_tree, [old_pub], old_secret))
    first, second = manifests(cfg)
    assert second.filestore.new_objects == 0  # dedup works with encryption on

    new_pub, new_secret = keypair()
    rotated = write(with_keys(stack_tree, [new_pub], new_secret), tmp_path / "new.yaml")
    backup(stack_file=rotated)
    third = manifests(cfg)[-1]
    assert third.encryption.fingerprints == [fingerprint(new_pub)]
    assert third.filestore.new_objects == third.filestore.files  # re-encrypted once for the new key
    assert third.verified
    # the old backup still restores with the old identity
    restore(stack_file=old, database="odoo_core", manifest_key=first.stamp, target_database="old_key_restore",
            restore_filestore=False)
    pg_tls.dropdb("old_key_restore")
    with pytest.raises(OpsError, match=fingerprint(old_pub)):
        restore.fn(stack_file=rotated, database="odoo_core", manifest_key=first.stamp,
                   target_database="nope_db", restore_filestore=False)
