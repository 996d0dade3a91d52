"""n8n export normalisation, file naming, change summaries, tag pruning, config redaction (pure)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from odoo_stack_ops import n8n_export as nx
from odoo_stack_ops.config_backup import redact_env, redact_ini
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.gitops import tags_to_prune, week_tag

RECORDED = json.loads((Path(__file__).parent / "data" / "n8n" / "api_workflow.json").read_text())


def test_normalize_drops_volatile_fields_and_keeps_meaning():
    out = nx.normalize(RECORDED)
    assert set(out) == {"id", "name", "active", "isArchived", "nodes", "connections", "settings", "tags"}
    assert out["nodes"][1]["credentials"] == {"httpBasicAuth": {"id": "uPh1eMgp4RIN2A0a", "name": "Odoo basic"}}
    saved_again = {**RECORDED, "updatedAt": "2027-01-01T00:00:00Z", "versionId": "other", "triggerCount": 3,
                   "staticData": {"node:Schedule": {"recurrenceRules": [1]}}}
    assert nx.render(saved_again) == nx.render(RECORDED)  # a save without a real change: identical file


def test_file_names_and_credential_stubs():
    assert nx.filename(RECORDED) == "workflows/CalkNccrJfLWs3za-sync-partners.json"
    assert nx.credential_stubs(RECORDED) == [{"id": "uPh1eMgp4RIN2A0a", "name": "Odoo basic", "type": "httpBasicAuth"}]
    with pytest.raises(OpsError):
        nx.filename({**RECORDED, "id": "../../etc"})


def test_malformed_workflows_are_refused_before_anything_is_written():
    for bad in [{"name": "x"}, {"name": "x", "nodes": {}, "connections": {}}, "not an object", None]:
        with pytest.raises(OpsError, match="malformed"):
            nx.ExportSet.build([RECORDED, bad])


def test_summary_and_message():
    a = nx.ExportSet.build([RECORDED]).files
    changed = {**RECORDED, "nodes": [*RECORDED["nodes"][:1], {**RECORDED["nodes"][1], "position": [300, 0]}]}
    other = {**RECORDED, "id": "Zz9", "name": "Other flow"}
    b = nx.ExportSet.build([changed, other]).files
    s = nx.summarize(a, b)
    assert s == {"added": ["workflows/Zz9-other-flow.json"], "changed": ["workflows/CalkNccrJfLWs3za-sync-partners.json"],
                 "removed": []}
    assert nx.commit_message(s, "2026-11-25").startswith("n8n workflows 2026-11-25: 1 added, 1 changed, 0 removed")


def test_weekly_tags_and_12_week_pruning():
    assert week_tag(date(2026, 11, 25)) == "n8n-2026-W48"
    tags = ["n8n-2026-W48", "n8n-2026-W36", "n8n-2026-W35", "n8n-2025-W50", "v1.0", "n8n-bogus"]
    assert tags_to_prune(tags, date(2026, 11, 25), 12) == ["n8n-2025-W50", "n8n-2026-W35"]


def test_config_redaction():
    env = "# Database\nDB_HOST=db.example\nDB_PASSWORD=hunter2\nEMPTY=\nexport TOKEN='abc'\n"
    assert redact_env(env) == "# Database\nDB_HOST=***\nDB_PASSWORD=***\nEMPTY=\nexport TOKEN=***\n"
    ini = "[options]\nadmin_passwd = s3cr3t\ndb_host = db\ndb_password = pw\nlist_db = False\n"
    out = redact_ini(ini)
    assert "s3cr3t" not in out and "pw\n" not in out and "db_host = db" in out and "admin_passwd = ***" in out
