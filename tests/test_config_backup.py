"""config-backup against the test bed's OpenSSH server standing for the droplet: the compose directory is read
over SSH, the git remote is reached over SSH too (strict known_hosts), secrets never reach the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from odoo_stack_ops import config_backup as cb
from odoo_stack_ops import redact
from odoo_stack_ops.errors import ConnectError, OpsError
from odoo_stack_ops.gitops import PushRefused
from tests import planted

pytestmark = pytest.mark.integration

COMPOSE = """services:
  odoo-core:
    image: odoo:18.0
    env_file: .env
    environment:
      DB_HOST: ${DB_HOST}
      DB_PASSWORD: "compose-pw-5521"
    volumes:
      - odoo-web-data:/var/lib/odoo
      - ./config/odoo.conf:/etc/odoo/odoo.conf
"""
ODOO_CONF = "[options]\nadmin_passwd = MASTER-PW-991\ndb_host = db.example\ndb_port = 25060\nlist_db = False\n"
NGINX = "server {\n  listen 80;\n  location / { proxy_pass http://odoo-core:8069; }\n}\n"
ENV = "# Database\nDB_HOST=db.example\nDB_PASSWORD=ENV-SECRET-4411\nSUPABASE_SERVICE_ROLE_KEY=srk-ENV-7720\n"
SECRETS = ("compose-pw-5521", "MASTER-PW-991", "ENV-SECRET-4411", "srk-ENV-7720")


def git(remote: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(remote), *args], capture_output=True, text=True,
                          check=True).stdout


def put_text(ssh, path: str, text: str) -> None:
    """Write a file on the SSH host through the SSH executor (as an operator's edit on the droplet would)."""
    ssh.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path], stdin=text.encode(), timeout=30)


@pytest.fixture
def droplet_dir(ssh_executor, tmp_path):
    """/…/compose on the SSH host with the seed's layout: docker-compose.yml, config/odoo.conf, nginx, .env."""
    root = str(tmp_path / "compose")
    for rel, text in (("docker-compose.yml", COMPOSE), ("config/odoo.conf", ODOO_CONF),
                      ("nginx/conf.d/odoo.conf", NGINX), (".env", ENV), ("addons/ipai/README", "not config\n")):
        put_text(ssh_executor, f"{root}/{rel}", text)
    return root


def tree_for(sshd, tmp_path: Path, remote: str, compose_dir: str, **git_extra) -> dict:
    return {"name": "config-test", "database": {"host": "127.0.0.1", "sslrootcert": "/etc/ssl/do-ca.crt"}, "spaces": {"bucket": "unused"},
            "ssh": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.key_file),
                    "known_hosts": str(sshd.known_hosts)},
            "odoo": {"compose_dir": compose_dir}, "git": {"config_remote": remote, **git_extra},
            "state_dir": str(tmp_path / "state")}


def write(tree: dict, tmp_path: Path, name: str = "stack.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    path.chmod(0o600)
    return str(path)


def test_commits_only_on_change_one_commit_per_change_set_and_no_secret_in_git(prefect_harness, sshd, ssh_executor,
                                                                               droplet_dir, git_remote, tmp_path):
    from flows.config_backup import config_backup

    path = write(tree_for(sshd, tmp_path, str(git_remote), droplet_dir), tmp_path)
    first = config_backup(stack_file=path)
    assert first["committed"] and first["files"] == ["stack/.env", "stack/config/odoo.conf", "stack/docker-compose.yml",
                                                     "stack/nginx/conf.d/odoo.conf"]
    assert not config_backup(stack_file=path)["committed"]
    assert git(git_remote, "rev-list", "--count", "main").strip() == "1"

    put_text(ssh_executor, f"{droplet_dir}/docker-compose.yml", COMPOSE + "    restart: always\n")
    put_text(ssh_executor, f"{droplet_dir}/nginx/conf.d/odoo.conf", NGINX.replace("80", "8080"))
    both = config_backup(stack_file=path)
    assert both["changed"] == ["stack/docker-compose.yml", "stack/nginx/conf.d/odoo.conf"]
    assert git(git_remote, "rev-list", "--count", "main").strip() == "2"  # one commit for the change set
    assert git(git_remote, "log", "-1", "--format=%s", "main").strip() == \
        "config files: changed docker-compose.yml, nginx/conf.d/odoo.conf"

    put_text(ssh_executor, f"{droplet_dir}/.env", ENV.replace("ENV-SECRET-4411", "ENV-SECRET-4412"))
    rotated = config_backup(stack_file=path)
    assert rotated["changed"] == ["stack/.env"]  # a rotated password is seen, without its value
    diff = git(git_remote, "diff", "-U0", "main~1", "main")
    assert diff.count("\n-DB_PASSWORD=<redacted:") == 1 and diff.count("\n+DB_PASSWORD=<redacted:") == 1
    assert "DB_HOST=<redacted:" in git(git_remote, "show", "main:stack/.env")

    ssh_executor.run(["rm", f"{droplet_dir}/nginx/conf.d/odoo.conf"])
    removed = config_backup(stack_file=path)
    assert removed["changed"] == ["stack/nginx/conf.d/odoo.conf"]
    assert "removed nginx/conf.d/odoo.conf" in git(git_remote, "log", "-1", "--format=%s", "main")

    history = git(git_remote, "log", "-p", "--all") + git(git_remote, "show", "main:stack/config/odoo.conf")
    for secret in (*SECRETS, "ENV-SECRET-4412"):
        assert secret not in history
    assert "db_port = 25060" in history and "DB_HOST: ${DB_HOST}" in history  # the non-secret parts stay readable
    assert not [p for p in (tmp_path / "state").rglob("*") if p.is_file() and b"ENV-SECRET" in p.read_bytes()]


def test_git_remote_over_ssh_with_strict_known_hosts(prefect_harness, sshd, droplet_dir, git_remote, tmp_path):
    from flows.config_backup import config_backup

    url = f"ssh://{sshd.user}@{sshd.host}:{sshd.port}{git_remote}"
    tree = tree_for(sshd, tmp_path, url, droplet_dir, ssh_key_file=str(sshd.key_file),
                    known_hosts=str(sshd.known_hosts))
    assert config_backup(stack_file=write(tree, tmp_path))["committed"]
    assert git(git_remote, "ls-tree", "-r", "--name-only", "main").split() == [
        "stack/.env", "stack/config/odoo.conf", "stack/docker-compose.yml", "stack/nginx/conf.d/odoo.conf"]

    stranger = tmp_path / "known_hosts_other"
    stranger.write_text(f"[{sshd.host}]:{sshd.port} ssh-ed25519 "
                        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    wrong = {**tree, "git": {**tree["git"], "known_hosts": str(stranger)}, "state_dir": str(tmp_path / "state2")}
    with pytest.raises(OpsError, match="Host key verification failed"):
        config_backup.fn(stack_file=write(wrong, tmp_path, "wrong.yaml"))


def test_bad_inputs_fail_clearly_and_commit_nothing(prefect_harness, sshd, droplet_dir, git_remote, tmp_path):
    from odoo_stack_ops.config import load_config
    from tasks.config_files import collect_config_files

    missing = load_config(write(tree_for(sshd, tmp_path, str(git_remote), "/nonexistent/compose"), tmp_path))
    with pytest.raises(OpsError, match="compose directory /nonexistent/compose not found"):
        collect_config_files.fn(missing)
    no_compose = str(tmp_path / "empty")
    Path(no_compose).mkdir()
    cfg = load_config(write(tree_for(sshd, tmp_path, str(git_remote), no_compose), tmp_path, "e.yaml"))
    with pytest.raises(OpsError, match=r"no docker-compose\.yml"):
        collect_config_files.fn(cfg)
    tree = tree_for(sshd, tmp_path, str(git_remote), droplet_dir)
    tree["ssh"]["port"] = 9  # nothing listens there
    with pytest.raises(ConnectError):
        collect_config_files.fn(load_config(write(tree, tmp_path, "down.yaml")))
    assert git(git_remote, "rev-list", "--all").strip() == ""  # the remote was never written


def test_no_planted_secret_shape_reaches_the_remote_history(prefect_harness, sshd, ssh_executor, git_remote, tmp_path):
    """More than 15 secret shapes planted in the droplet's compose directory, the real flow run over SSH to a real
    bare remote: `git log -p --all` of the remote holds none of them, the harmless settings stay readable."""
    from flows.config_backup import config_backup

    plant = planted.plant()
    root = str(tmp_path / "planted")
    for rel, text in plant.files.items():
        put_text(ssh_executor, f"{root}/{rel}", text)
    out = config_backup(stack_file=write(tree_for(sshd, tmp_path, str(git_remote), root), tmp_path))
    assert out["committed"] and "stack/nginx/.htpasswd" in out["files"]

    history = git(git_remote, "log", "-p", "--all")
    assert len(plant.values) >= 15
    for what, value in plant.values.items():
        assert value not in history, f"{what} reached git"
    assert "BEGIN PRIVATE KEY" not in history and "AGE-SECRET-KEY-1" not in history
    for readable in ("TZ=Asia/Singapore", "TZ: Asia/Singapore", "DB_PORT=25060", "db_port = 25060",
                     "GENERIC_TIMEZONE: Asia/Singapore", "proxy_pass http://odoo-core:8069;", "admin:<redacted:"):
        assert readable in history, readable


def test_a_configured_secret_the_redaction_misses_is_refused_before_the_push(prefect_harness, sshd, ssh_executor,
                                                                              droplet_dir, git_remote, tmp_path):
    """Defence in depth: a configured secret value in a file no redaction rule knows (an nginx comment) is marked
    by the config backup; and should a redaction ever miss one, the push guard refuses the whole push."""
    from flows.config_backup import config_backup
    from odoo_stack_ops import shared_state
    from odoo_stack_ops.config import load_config
    from tasks.config_files import commit_config_files

    secret = planted.pw("configured")
    redact.register(secret)
    path = write(tree_for(sshd, tmp_path, str(git_remote), droplet_dir), tmp_path)
    put_text(ssh_executor, f"{droplet_dir}/nginx/conf.d/odoo.conf", NGINX + f"# old upstream note {secret}\n")
    assert config_backup(stack_file=path)["committed"]
    assert secret not in git(git_remote, "log", "-p", "--all")
    published = git(git_remote, "rev-parse", "main")

    missed = cb.collect(ssh_executor, droplet_dir, shared_state.fingerprint_key(load_config(path)), known=())
    assert secret in missed["stack/nginx/conf.d/odoo.conf"]  # what a redaction that missed it would commit
    with pytest.raises(PushRefused, match=r"stack/nginx/conf\.d/odoo\.conf line 5 \(configured secret value\)"):
        commit_config_files.fn(load_config(path), missed)
    assert git(git_remote, "rev-parse", "main") == published
    assert secret not in git(git_remote, "log", "-p", "--all")


def test_config_backups_from_either_worker_produce_identical_files(prefect_harness, sshd, droplet_dir, git_remote,
                                                                    tmp_path):
    """Two workers (their own state dirs) share the stack's fingerprint key through Prefect: the second worker's
    run finds nothing changed, where a key of its own would re-mark every redacted value in a new commit."""
    from flows.config_backup import config_backup
    from odoo_stack_ops.config import load_config
    from tasks.config_files import KEY_FILE, collect_config_files

    tree = {**tree_for(sshd, tmp_path, str(git_remote), droplet_dir), "name": f"either-{tmp_path.name[-12:]}"}
    legacy = tmp_path / "worker-a" / KEY_FILE
    legacy.parent.mkdir()
    legacy.write_bytes(bytes(range(32)))  # worker A's key from before the key was shared: carried over
    a = write({**tree, "state_dir": str(tmp_path / "worker-a")}, tmp_path, "a.yaml")
    b = write({**tree, "state_dir": str(tmp_path / "worker-b")}, tmp_path, "b.yaml")
    assert config_backup(stack_file=a)["committed"]
    first = git(git_remote, "rev-parse", "main")
    assert config_backup(stack_file=b)["committed"] is False
    assert git(git_remote, "rev-parse", "main") == first
    files_a, files_b = collect_config_files.fn(load_config(a)), collect_config_files.fn(load_config(b))
    assert files_a == files_b and any("<redacted:" in text for text in files_a.values())
    assert not (tmp_path / "worker-b" / KEY_FILE).exists()
    from odoo_stack_ops import shared_state
    assert shared_state.fingerprint_key(load_config(b)) == bytes(range(32))
