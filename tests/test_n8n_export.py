"""n8n-export / n8n-import against a REAL n8n 1.123.81 (public API and CLI) and real git remotes: bare
repositories on disk, and git's own smart-HTTP server (`git http-backend`) that demands a token."""

from __future__ import annotations

import base64
import re
import subprocess
import threading
from datetime import timedelta
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import yaml

from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.gitops import today, week_tag

pytestmark = pytest.mark.integration
SECRET = "CRED-SECRET-hunter2-7731"


def git(remote: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(remote), *args], capture_output=True, text=True,
                          check=True).stdout


def everything_in(remote: Path) -> str:
    """Every commit, diff, tag and blob the remote holds, as text (for the secret grep)."""
    objects = git(remote, "cat-file", "--batch-all-objects", "--batch-check").split("\n")
    blobs = [line.split()[0] for line in objects if line.endswith(tuple("0123456789")) and " blob " in line]
    contents = [git(remote, "cat-file", "-p", sha) for sha in blobs]
    return git(remote, "log", "-p", "--all", "--format=%H %s%n%b") + git(remote, "tag", "-n99") + "".join(contents)


def tree_for(tmp_path: Path, n8n, remote: str, **extra) -> dict:
    """A stack configuration with only what these flows read (n8n, git, state); no droplet needed."""
    return {"name": "n8n-test", "database": {"host": "127.0.0.1", "sslrootcert": "/etc/ssl/do-ca.crt"}, "spaces": {"bucket": "unused"},
            "docker": {"mode": "local", "base_url": "unix:///nonexistent.sock"},
            "n8n": {"url": n8n.url, "api_key": n8n.api_key.get_secret_value(), "source": "api"},
            "git": {"n8n_remote": remote}, "state_dir": str(tmp_path / "state"), **extra}


def write(tree: dict, tmp_path: Path, name: str = "stack.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o600)
    return str(path)


def make_workflow(name: str, cred: dict | None = None, trigger: str = "schedule") -> dict:
    nodes = [{"name": "Schedule", "type": "n8n-nodes-base.scheduleTrigger", "typeVersion": 1.2, "position": [0, 0],
              "parameters": {"rule": {"interval": [{"field": "hours"}]}}} if trigger == "schedule" else
             {"name": "Manual", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
              "parameters": {}}]
    http = {"name": "HTTP", "type": "n8n-nodes-base.httpRequest", "typeVersion": 4.2, "position": [200, 0],
            "parameters": {"url": "http://odoo-core:8069/web/health"}}
    if cred:
        http["parameters"] |= {"authentication": "genericCredentialType", "genericAuthType": "httpBasicAuth"}
        http["credentials"] = {"httpBasicAuth": {"id": cred["id"], "name": cred["name"]}}
    return {"name": name, "nodes": [*nodes, http], "settings": {"executionOrder": "v1"},
            "connections": {nodes[0]["name"]: {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}}}


@pytest.fixture(scope="module")
def seeded(n8n):
    """A credential with a known secret, a tag, an active workflow that uses the credential, an inactive one."""
    cred = n8n.api("POST", "/credentials", json={"name": "Odoo basic", "type": "httpBasicAuth",
                                                  "data": {"user": "bot", "password": SECRET}})
    tag = n8n.api("POST", "/tags", json={"name": "odoo"})
    sync = n8n.api("POST", "/workflows", json=make_workflow("Sync partners", cred))
    n8n.api("PUT", f"/workflows/{sync['id']}/tags", json=[{"id": tag["id"]}])
    n8n.api("POST", f"/workflows/{sync['id']}/activate")
    report = n8n.api("POST", "/workflows", json=make_workflow("Nightly report", trigger="manual"))
    return {"cred": cred, "sync": sync, "report": report}


def file_of(wf: dict) -> str:
    from odoo_stack_ops.n8n_export import filename

    return filename(wf)


def test_api_export_is_idempotent_diffs_are_small_and_no_secret_reaches_git(prefect_harness, n8n, seeded,
                                                                            git_remote, tmp_path):
    from flows.n8n import n8n_export

    path = write(tree_for(tmp_path, n8n, str(git_remote)), tmp_path)
    first = n8n_export(stack_file=path)
    assert first["committed"] and first["workflows"] >= 2
    assert file_of(seeded["sync"]).removeprefix("workflows/").removesuffix(".json") in first["summary"]["added"]
    second = n8n_export(stack_file=path)
    assert not second["committed"] and second["summary"] == {"added": [], "changed": [], "removed": []}
    assert git(git_remote, "rev-list", "--count", "main").strip() == "1"  # two runs, one commit
    assert git(git_remote, "tag").split() == [week_tag(today())]

    sync = n8n.api("GET", f"/workflows/{seeded['sync']['id']}")
    moved = [{**n, "position": [40, 40]} if n["name"] == "Schedule" else n for n in sync["nodes"]]
    n8n.api("PUT", f"/workflows/{sync['id']}", json={"name": sync["name"], "nodes": moved,
                                                     "connections": sync["connections"], "settings": sync["settings"]})
    third = n8n_export(stack_file=path)
    assert third["committed"] and third["summary"]["changed"] == [file_of(sync)[10:-5]]
    assert git(git_remote, "diff", "--name-only", "main~1", "main").split() == [file_of(sync)]
    stat = git(git_remote, "diff", "--numstat", "main~1", "main").split()
    assert stat[:2] == ["2", "2"]  # one position, two numbers: nothing else moved
    assert git(git_remote, "rev-parse", f"{third['tag']}^{{commit}}") == git(git_remote, "rev-parse", "main")

    stored = everything_in(git_remote)
    assert SECRET not in stored and "Odoo basic" in stored and "httpBasicAuth" in stored
    assert n8n.api_key.get_secret_value() not in stored
    clone = tmp_path / "state" / "n8n-repo"
    assert not [p for p in clone.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    message = git(git_remote, "log", "-1", "--format=%B", "main")
    assert message.startswith(f"n8n workflows {today().isoformat()}: 0 added, 1 changed, 0 removed")


def test_cli_export_in_the_n8n_user_folder_matches_the_api_export(prefect_harness, n8n, seeded, git_remote,
                                                                   tmp_path):
    from flows.n8n import n8n_export

    path = write(tree_for(tmp_path, n8n, str(git_remote)), tmp_path)
    n8n_export(stack_file=path)
    tree = tree_for(tmp_path, n8n, str(git_remote))
    tree["n8n"] |= {"cli_argv": n8n.cli_argv(), "cli_where": "worker"}  # the command comes from the stack file
    via_cli = n8n_export(stack_file=write(tree, tmp_path, "cli.yaml"), source="cli")
    assert via_cli["workflows"] >= 2 and not via_cli["committed"]  # the same normalised files as the API's
    assert n8n.encryption_key.get_secret_value() not in " ".join(n8n.cli_argv())  # the CLI reads it from its folder
    assert n8n.cli("--version").stdout_text.strip() == "1.123.81"


def test_old_tags_are_pruned_on_the_remote_and_import_restores_a_tag(prefect_harness, n8n, seeded, git_remote,
                                                                      tmp_path):
    from flows.n8n import n8n_export, n8n_import

    path = write(tree_for(tmp_path, n8n, str(git_remote)), tmp_path)
    out = n8n_export(stack_file=path)
    head = git(git_remote, "rev-parse", "main").strip()
    recent, old = week_tag(today() - timedelta(weeks=11)), week_tag(today() - timedelta(weeks=14))
    for t in (recent, old, "n8n-2025-W01", "release-1"):
        git(git_remote, "tag", t, head)
    again = n8n_export(stack_file=path)
    assert again["pruned"] == sorted([old, "n8n-2025-W01"]) and not again["committed"]
    assert sorted(git(git_remote, "tag").split()) == sorted([out["tag"], recent, "release-1"])

    report, sync = seeded["report"], seeded["sync"]
    n8n.api("DELETE", f"/workflows/{report['id']}")
    current = n8n.api("GET", f"/workflows/{sync['id']}")
    n8n.api("POST", f"/workflows/{sync['id']}/deactivate")
    n8n.api("PUT", f"/workflows/{sync['id']}", json={"name": "Sync partners (broken)", "nodes": current["nodes"][:1],
                                                     "connections": {}, "settings": current["settings"]})
    result = n8n_import(tag=out["tag"], stack_file=path)
    by_name = {r["name"]: r for r in result["loaded"]}
    assert by_name["Nightly report"]["action"] == "created" and by_name["Sync partners"]["action"] == "updated"
    restored = n8n.api("GET", f"/workflows/{sync['id']}")
    assert restored["name"] == "Sync partners" and restored["active"] and len(restored["nodes"]) == 2
    assert [t["name"] for t in restored["tags"]] == ["odoo"]
    seeded["report"] = n8n.api("GET", f"/workflows/{by_name['Nightly report']['id']}")  # for later tests
    after = n8n_export(stack_file=path)  # the restored instance matches the tag (the re-created one has a new id)
    assert after["summary"]["changed"] == [] and len(after["summary"]["added"]) == 1
    with pytest.raises(OpsError, match="not found"):
        n8n_import.fn(tag="n8n-2019-W01", stack_file=path)


def test_bad_inputs_fail_clearly_and_leave_nothing_half_done(prefect_harness, n8n, seeded, git_remote, tmp_path):
    from flows.n8n import n8n_export
    from odoo_stack_ops.config import load_config
    from tasks.n8n import commit_workflows, normalise, read_workflows

    tree = tree_for(tmp_path, n8n, str(git_remote))
    path = write(tree, tmp_path)
    n8n_export(stack_file=path)
    commits = git(git_remote, "rev-list", "--count", "main")
    cfg = load_config(path)

    good = read_workflows.fn(cfg, "api")
    with pytest.raises(OpsError, match="malformed workflow 'broken'"):
        normalise.fn([*good, {"id": "x1", "name": "broken", "nodes": "nope", "connections": {}}])
    with pytest.raises(OpsError, match="refusing to record them all as removed"):
        commit_workflows.fn(cfg, normalise.fn([]))
    unreachable = load_config(write({**tree, "n8n": {**tree["n8n"], "url": "http://127.0.0.1:9"}}, tmp_path, "u.yaml"))
    with pytest.raises(ConnectError, match=r"unreachable at http://127\.0\.0\.1:9"):
        read_workflows.fn(unreachable, "api")
    wrong_key = load_config(write({**tree, "n8n": {**tree["n8n"], "api_key": "not-the-key"}}, tmp_path, "k.yaml"))
    with pytest.raises(OpsError, match="refused the API key"):
        read_workflows.fn(wrong_key, "api")
    assert git(git_remote, "rev-list", "--count", "main") == commits

    hook = git_remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'push refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    report = seeded["report"]
    n8n.api("PUT", f"/workflows/{report['id']}", json={**make_workflow("Nightly report v2", trigger="manual")})
    with pytest.raises(OpsError, match=r"rejected.*push refused by policy"):
        n8n_export.fn(stack_file=path)
    assert git(git_remote, "rev-list", "--count", "main") == commits  # nothing half-published
    clone = tmp_path / "state" / "n8n-repo"
    local = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                           check=True).stdout
    assert local == git(git_remote, "rev-parse", "main")  # the local commit was undone
    hook.unlink()
    retried = n8n_export(stack_file=path)  # the next run publishes it
    assert retried["committed"] and retried["summary"]["changed"] == [
        f"{report['id']}-nightly-report → {report['id']}-nightly-report-v2"]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class GitHttp:
    """git's smart-HTTP server (`git http-backend`, the CGI GitHub-like hosts speak) behind a check of the
    Authorization header: only `Basic base64(x-access-token:TOKEN)` may fetch or push."""

    def __init__(self, root: Path, token: str) -> None:
        self.root, self.requests = root, 0
        self.expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.server = make_server("127.0.0.1", 0, self.app, WSGIServer, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def app(self, environ, start_response):
        self.requests += 1
        if environ.get("HTTP_AUTHORIZATION") != self.expected:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"token required\n"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": "bot",
               "REMOTE_ADDR": "127.0.0.1", "PATH": "/usr/bin:/bin", "CONTENT_LENGTH": str(len(body)),
               "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
               **{k: environ.get(k, "") for k in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                                                  "HTTP_CONTENT_ENCODING")}}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        end = re.search(rb"\r?\n\r?\n", out)
        head, payload = (out[:end.start()], out[end.end():]) if end else (out, b"")
        status, headers = "200 OK", []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_remote_with_a_token_never_stores_or_shows_it(prefect_harness, n8n, seeded, tmp_path):
    from flows.n8n import n8n_export
    from odoo_stack_ops.sandbox.gitrepo import bare_repo

    token = "tok-" + "9f2c" * 6
    remote = bare_repo(tmp_path / "srv" / "n8n.git")
    server = GitHttp(tmp_path / "srv", token)
    try:
        url = f"{server.url}/n8n.git"
        with pytest.raises(OpsError, match="cannot fetch"):  # no token: refused, and says so
            n8n_export.fn(stack_file=write(tree_for(tmp_path, n8n, url), tmp_path, "no-token.yaml"))
        tree = tree_for(tmp_path, n8n, url, state_dir=str(tmp_path / "state2"))
        tree["git"]["token"] = token
        out = n8n_export(stack_file=write(tree, tmp_path))
        assert out["committed"] and git(remote, "rev-list", "--count", "main").strip() == "1"
        clone = tmp_path / "state2" / "n8n-repo"
        assert token not in (clone / ".git" / "config").read_text()
        assert not [p for p in clone.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert server.requests >= 3
    finally:
        server.stop()
