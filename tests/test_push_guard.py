"""The push guard against real git: a working clone pushing to a bare remote, as the config backup and the n8n
export do. Whatever the push would send is scanned; a hit refuses it, names file and line (never the value) and
leaves the remote exactly as it was. And the clone a killed git left locked is usable again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from odoo_stack_ops import n8n_export as nx
from odoo_stack_ops import redact
from odoo_stack_ops.config import GitConfig, validate_tree
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.gitops import PushRefused, Repo
from tests import planted

pytestmark = pytest.mark.integration


def remote_git(remote: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(remote), *args], capture_output=True, text=True,
                          check=True).stdout


def remote_state(remote: Path) -> str:
    """Every ref of the remote with its object: equal before and after means nothing was published."""
    return remote_git(remote, "for-each-ref", "--format=%(refname) %(objectname)")


def commit(repo: Repo, files: dict[str, str], message: str = "config files: test") -> None:
    repo.replace(files, "stack/")
    assert repo.commit_if_changed(message)


@pytest.fixture
def repo(git_remote, tmp_path) -> Repo:
    clone = Repo(tmp_path / "state" / "config-repo", str(git_remote), GitConfig())
    clone.sync()
    return clone


def test_a_configured_secret_refuses_the_push_naming_file_and_line(repo, git_remote):
    commit(repo, {"stack/.env": "TZ=UTC\n"})
    repo.push()
    published = remote_state(git_remote)
    secret = planted.pw("configured")
    redact.register(secret)

    repo.sync()
    commit(repo, {"stack/.env": f"TZ=UTC\nDB_PASSWORD={secret}\n"})
    with pytest.raises(PushRefused) as refused:
        repo.push()
    message = str(refused.value)
    assert "stack/.env line 2 (configured secret value)" in message and secret not in message
    assert "Nothing was pushed" in message and str(repo.path) in message  # says what to do
    assert remote_state(git_remote) == published
    assert secret not in remote_git(git_remote, "log", "-p", "--all")
    # the refused commit is gone from the clone: nothing a later run does can publish it
    assert repo.git("rev-parse", "HEAD") == repo.git("rev-parse", "origin/main")

    repo.sync()
    commit(repo, {"stack/.env": f"TZ=UTC\nDB_PASSWORD={secret}\n"}, "first: with the secret")
    commit(repo, {"stack/.env": "TZ=UTC\nDB_PASSWORD=<redacted:0123456789ab>\n"}, "second: fixed")
    with pytest.raises(PushRefused, match=r"stack/\.env line 2"):  # every outgoing commit counts, not the last
        repo.push()
    assert remote_state(git_remote) == published

    repo.sync()
    commit(repo, {"stack/.env": "TZ=UTC\nDB_PASSWORD=<redacted:0123456789ab>\n"})
    repo.push()
    assert remote_git(git_remote, "rev-list", "--count", "main").strip() == "2"
    assert secret not in remote_git(git_remote, "log", "-p", "--all")


def test_a_token_shape_refuses_a_new_branch_and_a_new_tag(repo, git_remote):
    key = planted.aws_access_key()
    commit(repo, {"stack/notes.txt": f"harmless\nharmless\naws {key}\n"})
    with pytest.raises(PushRefused) as refused:  # an empty remote: the whole new branch is outgoing
        repo.push(tags=["n8n-2026-W48"])
    assert "stack/notes.txt line 3 (AWS access key)" in str(refused.value) and key not in str(refused.value)
    assert remote_state(git_remote) == ""

    commit(repo, {"stack/notes.txt": "harmless\n"})
    repo.push()
    published = remote_state(git_remote)
    pem = planted.pem_private_key()
    commit(repo, {"stack/notes.txt": "harmless\n", "stack/key.pem": pem + "\n"}, "a commit only a tag points at")
    repo.tag("n8n-2026-W49")
    repo.git("reset", "-q", "--hard", "origin/main")
    with pytest.raises(PushRefused, match=r"stack/key\.pem line 1 \(private key\)"):
        repo.push(tags=["n8n-2026-W49"])
    assert remote_state(git_remote) == published
    assert planted.pem_body(pem) not in remote_git(git_remote, "log", "-p", "--all")


def test_a_secret_in_a_commit_message_refuses_the_push(repo, git_remote):
    token = planted.github_token()
    commit(repo, {"stack/.env": "TZ=UTC\n"}, f"config files: changed .env\n\nrotated {token}")
    with pytest.raises(PushRefused, match=r"message line 3 \(GitHub token\)"):
        repo.push()
    assert remote_state(git_remote) == ""


def test_the_n8n_export_push_is_guarded(git_remote, tmp_path):
    from tasks.n8n import commit_workflows

    cfg = validate_tree({"name": "guard-test", "database": {"host": "127.0.0.1", "sslmode": "require"},
                         "spaces": {"bucket": "unused"},
                         "docker": {"mode": "local", "base_url": "unix:///nonexistent.sock"},
                         "git": {"n8n_remote": str(git_remote)}, "state_dir": str(tmp_path / "state")})
    jwt = planted.jwt_service_role()
    workflow = '{\n  "id": "1",\n  "name": "Sync",\n  "nodes": [\n    {"apikey": "' + jwt + '"}\n  ]\n}\n'
    files = {f"{nx.WORKFLOWS_DIR}1-sync.json": workflow, nx.CREDENTIALS_FILE: "[]\n"}
    with pytest.raises(PushRefused, match=r"workflows/1-sync\.json line 5 \(JWT\)") as refused:
        commit_workflows.fn(cfg, files)
    assert jwt not in str(refused.value) and remote_state(git_remote) == ""
    files[f"{nx.WORKFLOWS_DIR}1-sync.json"] = workflow.replace(jwt, "{{ $credentials.key }}")
    assert commit_workflows.fn(cfg, files)["committed"]
    assert jwt not in remote_git(git_remote, "log", "-p", "--all")


def plant_killed_gits_locks(repo: Repo) -> list[Path]:
    """The lock files a git SIGKILLed half way leaves (git creates `<file>.lock`, writes, renames it over)."""
    git_dir = repo.path / ".git"
    locks = [git_dir / "index.lock", git_dir / "config.lock", git_dir / "refs" / "heads" / "main.lock"]
    for lock in locks:
        lock.write_bytes(b"DIRC\0\0\0\2")  # a half-written index
    return locks


def test_a_clone_a_killed_git_left_locked_is_unlocked_and_used(repo, git_remote, caplog):
    """A worker killed while its run's git commits leaves `.git/index.lock` (and ref or config locks): every later
    run failed on it ('File exists') until someone removed it by hand."""
    commit(repo, {"stack/.env": "TZ=UTC\n"})
    repo.push()
    locks = plant_killed_gits_locks(repo)
    repo.sync()
    commit(repo, {"stack/.env": "TZ=Asia/Singapore\n"})
    repo.push()
    assert "TZ=Asia/Singapore" in remote_git(git_remote, "show", "main:stack/.env")
    assert not any(lock.exists() for lock in locks)
    assert any("removed lock files" in r.getMessage() and ".git/index.lock" in r.getMessage() for r in caplog.records)


def test_a_lock_is_kept_while_a_process_still_works_in_the_clone(repo, git_remote):
    """A killed run's git may outlive it (the run's flock went with the run): its locks are not taken from it."""
    commit(repo, {"stack/.env": "TZ=UTC\n"})
    repo.push()
    (lock,) = plant_killed_gits_locks(repo)[:1]
    still = subprocess.Popen(["sleep", "60"], cwd=repo.path / ".git")
    try:
        with pytest.raises(OpsError, match=r"a git process still works in .* holds .*\.git/index\.lock"):
            repo.sync()
        assert lock.exists()
    finally:
        still.kill()
        still.wait()
    repo.sync()
    assert not lock.exists()
