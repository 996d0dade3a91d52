"""pg_dump older than the server: the night fails before anything is uploaded, and says what to install.

The server is a real PostgreSQL 16 (the binaries of the `pgserver` wheel) while the worker's pg_dump is 15, as
after DigitalOcean upgrades the managed cluster and the worker keeps its old client. With PostgreSQL 16's
client tools first on PATH, the same night succeeds and is verified by restore.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import psycopg
import pytest
import yaml

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.sandbox import odoo_data
from tests.fixtures.services import started

pytestmark = pytest.mark.integration


def pg16_bindir() -> Path:
    spec = importlib.util.find_spec("pgserver")  # located, not imported: its import touches the user's dirs
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver wheel is not installed (uv sync --frozen installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@pytest.fixture(scope="module")
def pg16(seeded_filestore):
    from odoo_stack_ops.sandbox.postgres import PgCluster

    cluster = started("postgresql 16", lambda: PgCluster(bindir=pg16_bindir()).start())
    cluster.createdb("odoo_core")
    with psycopg.connect(**cluster.conninfo("odoo_core")) as conn:
        odoo_data.populate(conn, partners=20, extra_tables=5, extension=False)  # no contrib there
        odoo_data.register_attachments(conn, seeded_filestore)
    yield cluster
    cluster.stop()


def test_pg_dump_older_than_the_server(prefect_harness, stack_tree, pg16, tmp_path, monkeypatch):
    from flows.backup import backup

    assert pg16.execute("SHOW server_version_num")[0][0].startswith("16")
    tree = {**stack_tree, "database": {"host": pg16.host, "port": pg16.port, "user": pg16.user,
                                       "password": pg16.password.get_secret_value(), "name": "odoo_core",
                                       "databases": ["odoo_core"], "sslmode": "disable"}}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = validate_tree(tree)
    s3 = spaces.client(cfg.spaces)

    with pytest.raises(OpsError, match=r"pg_dump on .* is version 15 but the server is PostgreSQL 16: "
                                       r"install postgresql-client-16"):
        backup(stack_file=str(path))
    assert s3.list_objects_v2(Bucket=cfg.spaces.bucket).get("KeyCount") == 0  # nothing uploaded at all
    assert s3.list_multipart_uploads(Bucket=cfg.spaces.bucket).get("Uploads", []) == []

    monkeypatch.setenv("PATH", f"{pg16_bindir()}{os.pathsep}{os.environ['PATH']}")  # the operator's fix
    backup(stack_file=str(path))
    (ref,) = rs.list_manifests(spaces.Bucket.open(cfg.spaces))
    m = rs.load_manifest(spaces.Bucket.open(cfg.spaces), ref.key)
    assert m.verified and m.server_version.startswith("16"), m.verification
    assert "pg_dump (PostgreSQL) 16" in m.dump.pg_dump_version
