"""n8n-export / n8n-import against a REAL n8n (API and CLI) and a real bare git remote."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from odoo_stack_ops.errors import ConnectError, OpsError

pytestmark = pytest.mark.integration
SECRET = "CRED-SECRET-hunter2-7731"


@pytest.fixture(scope="session")
def workflows(n8n):
    cred = n8n.api("POST", "/credentials", json={"name": "Odoo basic", "type": "httpBasicAuth",
                                                  "data": {"user": "bot", "password": SECRET}})
    made = []
    for name in ("Sync partners", "Nightly report"):
        made.append(n8n.api("POST", "/workflows", json={
            "name": name, "settings": {"executionOrder": "v1"},
            "nodes": [{"id": f"node-{len(made)}-a", "name": "Schedule", "type": "n8n-nodes-base.scheduleTrigger",
                       "typeVersion": 1.2, "position": [0, 0], "parameters": {"rule": {"interval": [{"field": "hours"}]}}},
                      {"id": f"node-{len(made)}-b", "name": "HTTP", "type": "n8n-nodes-base.httpRequest",
                       "typeVersion": 4.2, "position": [200, 0],
                       "parameters": {"url": "http://odoo-core:8069/web/health", "authentication": "genericCredentialType",
                                      "genericAuthType": "httpBasicAuth"},
                       "credentials": {"httpBasicAuth": {"id": cred["id"], "name": "Odoo basic"}}}],
            "connections": {"Schedule": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}}}))
    return made


@pytest.fixture
def export_tree(stack_tree, n8n, git_remote, tmp_path):
    return {**stack_tree, "n8n": {"url": n8n.url, "api_key": n8n.api_key.get_secret_value(), "source": "api"},
            "git": {"n8n_remote": str(git_remote), "config_remote": str(git_remote)},
            "state_dir": str(tmp_path / "state")}


def write(tree, tmp_path, name="stack.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(tree))
    return str(p)


def git(remote, *args):
    return subprocess.run(["git", "--git-dir", str(remote), *args], capture_output=True, text=True, check=True).stdout


def test_api_export_is_idempotent_and_diffs_are_small(prefect_harness, n8n, workflows, export_tree, git_remote,
                                                      tmp_path):
    from flows.n8n import n8n_export

    path = write(export_tree, tmp_path)
    first = n8n_export(stack_file=path)
    assert first["committed"] and len(first["summary"]["added"]) == 2
    second = n8n_export(stack_file=path)
    assert not second["committed"]
    assert git(git_remote, "rev-list", "--count", "main").strip() == "1"  # two runs, one commit
    assert first["tag"] in git(git_remote, "tag").split()

    wf = workflows[0]
    n8n.api("PUT", f"/workflows/{wf['id']}", json={"name": wf["name"], "nodes": [
        {**wf["nodes"][0], "position": [40, 40]}, wf["nodes"][1]], "connections": wf["connections"],
        "settings": {"executionOrder": "v1"}})
    third = n8n_export(stack_file=path)
    assert third["summary"]["changed"] == [f"workflows/{wf['id']}-sync-partners.json"]
    changed = git(git_remote, "diff", "--name-only", "main~1", "main").split()
    assert changed == [f"workflows/{wf['id']}-sync-partners.json"]
    history = git(git_remote, "log", "-p", "--all")
    assert SECRET not in history and "Odoo basic" in history  # stubs only, never the credential's data


def test_cli_export_matches_the_api_export(prefect_harness, n8n, workflows, export_tree, git_remote, tmp_path,
                                           monkeypatch):
    from flows.n8n import n8n_export

    path = write(export_tree, tmp_path)
    n8n_export(stack_file=path)
    for k, v in n8n.env().items():
        if k.startswith("N8N_") or k in ("PATH", "DB_SQLITE_POOL_SIZE"):
            monkeypatch.setenv(k, v)
    via_cli = n8n_export(stack_file=path, source="cli", cli_command=n8n.cli_argv(), cli_where="worker")
    assert via_cli["workflows"] >= 2 and not via_cli["committed"]  # same normalised files as through the API


def test_old_tags_are_pruned_and_import_restores(prefect_harness, n8n, workflows, export_tree, git_remote, tmp_path):
    from flows.n8n import n8n_export, n8n_import

    path = write(export_tree, tmp_path)
    out = n8n_export(stack_file=path)
    head = git(git_remote, "rev-parse", "main").strip()
    git(git_remote, "tag", "n8n-2025-W01", head)
    again = n8n_export(stack_file=path)
    assert again["pruned"] == ["n8n-2025-W01"] and "n8n-2025-W01" not in git(git_remote, "tag").split()
    n8n.api("DELETE", f"/workflows/{workflows[1]['id']}")
    result = n8n_import(tag=out["tag"], stack_file=path)
    assert result["Nightly report"] == "created" and result["Sync partners"] == "updated"
    names = [w["name"] for w in n8n.api("GET", "/workflows")["data"]]
    assert "Nightly report" in names


def test_bad_inputs_fail_clearly_and_publish_nothing(prefect_harness, n8n, workflows, export_tree, git_remote,
                                                     tmp_path):
    from flows.n8n import commit_workflows, n8n_export
    from odoo_stack_ops.config import validate_tree

    path = write(export_tree, tmp_path)
    n8n_export(stack_file=path)
    commits = git(git_remote, "rev-list", "--count", "main")
    cfg = validate_tree(export_tree)
    with pytest.raises(OpsError, match="malformed"):
        commit_workflows.fn(cfg, [{"id": "x", "name": "broken", "nodes": "nope"}], 12)
    unreachable = {**export_tree, "n8n": {**export_tree["n8n"], "url": "http://127.0.0.1:9"}}
    with pytest.raises(ConnectError, match="unreachable"):
        n8n_export.fn(stack_file=write(unreachable, tmp_path, "u.yaml"))
    hook = git_remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'push refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    n8n.api("PUT", f"/workflows/{workflows[0]['id']}", json={"name": "Sync partners v2", "nodes": workflows[0]["nodes"],
                                                             "connections": workflows[0]["connections"],
                                                             "settings": {"executionOrder": "v1"}})
    with pytest.raises(OpsError, match="rejected"):
        n8n_export.fn(stack_file=path)
    assert git(git_remote, "rev-list", "--count", "main") == commits  # nothing half-published
    hook.unlink()
    assert n8n_export(stack_file=path)["committed"]  # the next run publishes it


def test_config_backup_commits_on_change_with_secrets_redacted(prefect_harness, export_tree, git_remote, tmp_path):
    from flows.config_backup import config_backup

    compose = tmp_path / "compose"
    (compose / "config").mkdir(parents=True)
    (compose / "nginx" / "conf.d").mkdir(parents=True)
    (compose / "docker-compose.yml").write_text("services:\n  odoo-core:\n    image: odoo:18.0\n")
    (compose / "config" / "odoo.conf").write_text("[options]\nadmin_passwd = MASTER-PW-991\ndb_port = 25060\n")
    (compose / "nginx" / "conf.d" / "odoo.conf").write_text("server { listen 80; }\n")
    (compose / ".env").write_text("DB_HOST=db\nDB_PASSWORD=ENV-SECRET-4411\n")
    tree = {**export_tree, "odoo": {**export_tree["odoo"], "compose_dir": str(compose)}}
    path = write(tree, tmp_path, "c.yaml")
    first = config_backup(stack_file=path)
    assert first["committed"] and "stack/nginx/conf.d/odoo.conf" in first["files"]
    assert not config_backup(stack_file=path)["committed"]
    (compose / "docker-compose.yml").write_text("services:\n  odoo-core:\n    image: odoo:18.0\n    restart: always\n")
    third = config_backup(stack_file=path)
    assert third["changed"] == ["stack/docker-compose.yml"]
    history = git(git_remote, "log", "-p", "--all")
    assert "MASTER-PW-991" not in history and "ENV-SECRET-4411" not in history and "DB_PASSWORD=***" in history
