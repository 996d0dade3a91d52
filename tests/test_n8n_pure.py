"""n8n export normalisation, file naming, change summaries, weekly tags, git credentials, config redaction.

Pure or local-only (no n8n needed). The workflow data are real exports of n8n 1.123.81 recorded in tests/data/n8n
(public API pages, the same instance's `n8n export:workflow --backup` files, and a workflow saved again
without a change); they hold no secret (a credential is referenced by id and name only).
"""

from __future__ import annotations

import copy
import json
import shlex
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr

from odoo_stack_ops import config_backup as cb
from odoo_stack_ops import n8n_export as nx
from odoo_stack_ops import n8n_source
from odoo_stack_ops.command import Command
from odoo_stack_ops.config import GitConfig
from odoo_stack_ops.errors import ConfigError, OpsError
from odoo_stack_ops.executors.local import LocalExecutor
from odoo_stack_ops.gitops import author_identity, check_remote, git_env, shown_remote, tags_to_prune, week_tag

DATA = Path(__file__).parent / "data" / "n8n"
PAGES = json.loads((DATA / "api_pages.json").read_text())
API = PAGES["page1"]["data"] + PAGES["page2"]["data"]
CLI = [json.loads(p.read_text()) for p in sorted((DATA / "cli_backup").glob("*.json"))]
RESAVED = json.loads((DATA / "api_resaved.json").read_text())
SYNC = next(w for w in API if w["name"] == "Sync partners")
KEY = b"k" * 32


def test_recorded_data_holds_no_secret():
    for path in DATA.rglob("*.json"):
        text = path.read_text()
        assert "apiKey" not in text and "rawApiKey" not in text and "U2FsdGVk" not in text  # U2FsdGVk: encrypted data
        assert '"data"' not in text.replace('"data": [', "")  # no credential data object anywhere


def test_normalize_keeps_meaning_and_drops_volatile_fields():
    out = nx.normalize(SYNC)
    assert set(out) == {"id", "name", "active", "isArchived", "nodes", "connections", "settings", "tags"}
    assert out["active"] is True and out["tags"] == ["odoo"] and out["settings"]["timezone"] == "Asia/Singapore"
    assert not set(out) & nx.VOLATILE
    http = next(n for n in out["nodes"] if n["name"] == "HTTP")
    assert http["credentials"] == {"httpBasicAuth": {"id": "0UzVDdwcNUliuXrS", "name": "Odoo basic"}}


def test_api_and_cli_exports_give_identical_files():
    assert len(API) == len(CLI) == 2
    assert nx.ExportSet.build(API).files == nx.ExportSet.build(CLI).files


def test_a_save_without_a_real_change_gives_the_same_file():
    assert RESAVED["updatedAt"] != SYNC["updatedAt"] and RESAVED["versionCounter"] != SYNC.get("versionCounter")
    assert nx.render(RESAVED) == nx.render(SYNC)
    noisy = {**SYNC, "versionId": "other", "triggerCount": 9, "pinData": {"HTTP": [{"json": {"customer": "x"}}]},
             "staticData": {"node:Schedule": {"recurrenceRules": [3]}}, "nodes": list(reversed(SYNC["nodes"])),
             "tags": list(reversed([*SYNC["tags"], {"id": "t2", "name": "erp"}]))}
    assert nx.render({**noisy, "tags": SYNC["tags"]}) == nx.render(SYNC)  # node order, runtime data: no change
    assert json.loads(nx.render(noisy))["tags"] == ["erp", "odoo"]


def test_a_real_change_touches_only_its_lines():
    moved = copy.deepcopy(SYNC)
    moved["nodes"][0]["position"] = [40, 40]
    before, after = nx.render(SYNC).splitlines(), nx.render(moved).splitlines()
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 2


def test_file_names_are_stable_and_safe():
    names = sorted(nx.ExportSet.build(API).workflow_files())
    assert names == ["workflows/CBDktUchMeS0JVlG-sync-partners.json",
                     "workflows/GAwSyXLZnLeCVwQl-nightly-report-sales-mattermost.json"]
    assert nx.workflow_id(names[1]) == "GAwSyXLZnLeCVwQl"
    assert nx.slug("!!!") == "workflow" and len(nx.slug("x" * 200)) == 60
    for bad in ("../../etc", "a/b", "", None, "id with space"):
        with pytest.raises(OpsError, match="usable id"):
            nx.filename({**SYNC, "id": bad})


def test_credentials_are_stubs_only():
    leaky = copy.deepcopy(SYNC)
    http = next(n for n in leaky["nodes"] if n["name"] == "HTTP")
    http["credentials"]["httpBasicAuth"]["data"] = {"password": "LEAK-9911"}  # never trust what comes with a ref
    files = nx.ExportSet.build([leaky]).files
    assert "LEAK-9911" not in "".join(files.values())
    assert json.loads(files[nx.CREDENTIALS_FILE]) == [{"id": "0UzVDdwcNUliuXrS", "name": "Odoo basic",
                                                       "type": "httpBasicAuth"}]


@pytest.mark.parametrize("bad", [
    {"name": "x"}, {"id": "a1", "name": "x", "nodes": {}, "connections": {}}, "not an object", None,
    {"id": "a1", "name": "", "nodes": [], "connections": {}},
    {"id": "a1", "name": "x", "nodes": [{"name": "n"}], "connections": {}},
    {"id": "a1", "name": "x", "nodes": [], "connections": {}, "settings": []},
])
def test_malformed_workflows_are_refused_before_anything_is_written(bad):
    with pytest.raises(OpsError, match="malformed"):
        nx.ExportSet.build([SYNC, bad])


def test_duplicate_ids_are_refused():
    with pytest.raises(OpsError, match="appears twice"):
        nx.ExportSet.build([SYNC, {**SYNC, "name": "Copy"}])


def test_summary_matches_by_id_and_names_renames():
    old = nx.ExportSet.build(API).files
    other = next(w for w in API if w is not SYNC)
    renamed = {**SYNC, "name": "Sync partners v2"}
    added = {**other, "id": "Zz9", "name": "Other flow"}
    changed = {**other, "nodes": [{**other["nodes"][0], "position": [9, 9]}, *other["nodes"][1:]]}
    s = nx.summarize(old, nx.ExportSet.build([renamed, changed, added]).files)
    assert s == {"added": ["Zz9-other-flow"],
                 "changed": ["CBDktUchMeS0JVlG-sync-partners → CBDktUchMeS0JVlG-sync-partners-v2",
                             "GAwSyXLZnLeCVwQl-nightly-report-sales-mattermost"], "removed": []}
    gone = nx.summarize(old, nx.ExportSet.build([SYNC]).files)
    assert gone == {"added": [], "changed": [], "removed": ["GAwSyXLZnLeCVwQl-nightly-report-sales-mattermost"]}
    message = nx.commit_message(s, "2026-11-25")
    assert message.startswith("n8n workflows 2026-11-25: 1 added, 2 changed, 0 removed\n\n")
    assert "added: Zz9-other-flow" in message
    assert nx.summarize(old, old) == {"added": [], "changed": [], "removed": []}


def test_files_read_back_for_import_are_validated():
    path, text = next(iter(nx.ExportSet.build([SYNC]).workflow_files().items()))
    assert nx.parse_file(path, text) == nx.normalize(SYNC)
    with pytest.raises(OpsError, match="malformed workflow JSON"):
        nx.parse_file(path, text[:-20])
    body = n8n_source.api_body(nx.parse_file(path, text))
    assert set(body) == {"name", "nodes", "connections", "settings"}
    assert set(body["settings"]) <= set(n8n_source.API_SETTINGS)


def test_weekly_tags_and_12_week_pruning():
    assert week_tag(date(2026, 11, 25)) == "n8n-2026-W48"
    assert week_tag(date(2027, 1, 1)) == "n8n-2026-W53"  # ISO weeks: the tag follows the ISO year
    tags = ["n8n-2026-W48", "n8n-2026-W36", "n8n-2026-W35", "n8n-2025-W50", "v1.0", "n8n-bogus", "n8n-2026-W60"]
    assert tags_to_prune(tags, date(2026, 11, 25), 12) == ["n8n-2025-W50", "n8n-2026-W35"]
    assert tags_to_prune(tags, date(2026, 11, 25), 100) == []
    with pytest.raises(ValueError):
        tags_to_prune(tags, date(2026, 11, 25), 0)


def test_git_token_travels_masked_in_the_environment_never_in_argv_or_url():
    token = "ghp_TOKEN-5521-secret"
    env = git_env(GitConfig(token=SecretStr(token), author="Ops Bot <bot@example.com>"),
                  "https://git.example.com:8443/ops/n8n.git")
    assert isinstance(env["GIT_CONFIG_VALUE_0"], SecretStr)
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com:8443/.extraHeader"  # only for that host
    command = Command.of(["git", "push", "origin"], env)
    assert token not in command.masked() and "GIT_CONFIG_VALUE_0=***" in command.masked()
    assert token not in " ".join(command.argv)
    assert (env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]) == ("Ops Bot", "bot@example.com")
    assert author_identity("plain") == ("plain", "ops@localhost")
    with pytest.raises(ConfigError, match="GIT_TOKEN"):
        check_remote(f"https://bot:{token}@git.example.com/ops/n8n.git")
    assert token not in shown_remote(f"https://bot:{token}@git.example.com/ops/n8n.git")
    for ok in ("https://git.example.com/ops/n8n.git", "git@github.com:ops/n8n.git", "/srv/git/n8n.git",
               "ssh://git@127.0.0.1:2222/srv/n8n.git"):
        assert check_remote(ok) == ok


def test_git_ssh_command_is_strict_and_quoted():
    env = git_env(GitConfig(ssh_key_file=Path("/keys/my key"), known_hosts=Path("/etc/known hosts")))
    cmd = env["GIT_SSH_COMMAND"]
    assert "StrictHostKeyChecking=yes" in cmd and "BatchMode=yes" in cmd
    assert shlex.split(cmd)[-8:] == ["-o", "UserKnownHostsFile=/etc/known hosts", "-o", "GlobalKnownHostsFile=/dev/null",
                                     "-i", "/keys/my key", "-o", "IdentitiesOnly=yes"]


def test_env_redaction_keeps_keys_and_marks_changes():
    env = "# Database\nDB_HOST=db.example\nDB_PASSWORD=hunter2\nEMPTY=\nexport TOKEN='abc'\n"
    out = cb.redact_env(env, KEY)
    assert "hunter2" not in out and "db.example" not in out and "abc" not in out
    assert [line.split("=")[0] for line in out.splitlines()] == ["# Database", "DB_HOST", "DB_PASSWORD", "EMPTY",
                                                                  "export TOKEN"]
    assert "EMPTY=\n" in out and cb.redact_env(env, KEY) == out
    changed = cb.redact_env(env.replace("hunter2", "hunter3"), KEY)
    assert changed != out and changed.splitlines()[1] == out.splitlines()[1]  # only the changed line differs
    assert cb.redact_env(env, b"other-key" * 4) != out  # the mark depends on the worker's key


def test_odoo_conf_and_compose_redaction():
    ini = "[options]\nadmin_passwd = s3cr3t-77\ndb_host = db\ndb_password = pw-9281\nlist_db = False\n; key = x\n"
    out = cb.redact_ini(ini, KEY)
    assert "s3cr3t-77" not in out and "pw-9281" not in out and "db_host = db" in out
    assert "list_db = False" in out and "; key = x" in out and out.startswith("[options]\nadmin_passwd = <redacted:")
    compose = ("services:\n  odoo-core:\n    image: odoo:18.0\n    environment:\n      DB_PASSWORD: \"pw-4410\"\n"
               "      DB_HOST: ${DB_HOST}\n      - \"SUPABASE_SERVICE_ROLE_KEY=srk-8812\"\n"
               "      - N8N_ENCRYPTION_KEY=${N8N_ENCRYPTION_KEY}\n      N8N_BASIC_AUTH_ACTIVE: \"true\"\n"
               "    env_file: .env\n")
    out = cb.redact_compose(compose, KEY)
    assert "pw-4410" not in out and "srk-8812" not in out
    assert "DB_HOST: ${DB_HOST}" in out and "N8N_ENCRYPTION_KEY=${N8N_ENCRYPTION_KEY}" in out
    assert '- "SUPABASE_SERVICE_ROLE_KEY=<redacted:' in out and out.count("<redacted:") == 2
    assert 'N8N_BASIC_AUTH_ACTIVE: "true"' in out and cb.redact_compose(out, KEY) == out
    assert cb.redact_file("nginx/conf.d/odoo.conf", "server { listen 80; }\n", KEY) == "server { listen 80; }\n"


def test_change_message():
    old = {"stack/.env": "A=1\n", "stack/docker-compose.yml": "x\n"}
    new = {"stack/docker-compose.yml": "y\n", "stack/nginx/odoo.conf": "z\n"}
    changed, message = cb.change_message(old, new)
    assert changed == ["stack/.env", "stack/docker-compose.yml", "stack/nginx/odoo.conf"]
    assert message == "config files: added nginx/odoo.conf; changed docker-compose.yml; removed .env\n"
    assert cb.change_message(old, old) == ([], "")


def fake_cli(tmp_path: Path, body: str) -> list[str]:
    """A stand-in for the n8n binary that writes files into --output=DIR/ (exercises the tar read-back)."""
    script = tmp_path / "n8n"
    script.write_text("#!/bin/sh\nset -e\nfor a in \"$@\"; do case $a in --output=*) out=${a#--output=};; esac; done\n"
                      + body)
    script.chmod(0o755)
    return [str(script)]


def test_cli_source_reads_the_exported_files_back(tmp_path):
    argv = fake_cli(tmp_path, f"cp {DATA}/cli_backup/*.json \"$out\"\n")
    got = n8n_source.fetch_cli(LocalExecutor(), argv)
    assert sorted(w["id"] for w in got) == sorted(w["id"] for w in CLI)
    empty = fake_cli(tmp_path, "echo 'No workflows found with specified filters' >&2; exit 1\n")
    assert n8n_source.fetch_cli(LocalExecutor(), empty) == []


def test_cli_source_fails_clearly(tmp_path):
    broken = fake_cli(tmp_path, "printf '{\"id\": \"x\", ' > \"$out/x.json\"\n")
    with pytest.raises(OpsError, match=r"malformed workflow JSON in \./x\.json"):
        n8n_source.fetch_cli(LocalExecutor(), broken)
    failing = fake_cli(tmp_path, "echo 'SQLITE_CANTOPEN: unable to open database file' >&2; exit 1\n")
    with pytest.raises(OpsError, match="SQLITE_CANTOPEN"):
        n8n_source.fetch_cli(LocalExecutor(), failing)
