"""Git on the worker for the export flows: commit only on change, weekly tags, pruning, push — nothing half-done.

Credentials never reach argv or the remote URL: an HTTPS token travels as an http.extraHeader set through
GIT_CONFIG_* environment variables (a SecretStr, masked in logs); SSH uses a key and a known_hosts file with
strict checking.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from odoo_stack_ops.config import GitConfig, StackConfig
from odoo_stack_ops.errors import CommandFailed, OpsError
from odoo_stack_ops.executors.local import LocalExecutor

TAG = re.compile(r"^n8n-(\d{4})-W(\d{2})$")


def git_env(cfg: GitConfig) -> dict[str, str | SecretStr]:
    env: dict[str, str | SecretStr] = {"GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": cfg.author.split(" <")[0],
                                       "GIT_COMMITTER_NAME": cfg.author.split(" <")[0]}
    email = cfg.author.partition("<")[2].rstrip(">") or "ops@localhost"
    env |= {"GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_EMAIL": email}
    if cfg.token is not None:
        basic = base64.b64encode(f"x-access-token:{cfg.token.get_secret_value()}".encode()).decode()
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": SecretStr(f"Authorization: Basic {basic}")}
    if cfg.ssh_key_file or cfg.known_hosts:
        parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if cfg.known_hosts:
            parts += ["-o", f"UserKnownHostsFile={Path(cfg.known_hosts).expanduser()}"]
        if cfg.ssh_key_file:
            parts += ["-i", str(Path(cfg.ssh_key_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        env["GIT_SSH_COMMAND"] = shlex.join(parts)
    return env


def week_tag(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"n8n-{year}-W{week:02d}"


def tags_to_prune(tags: Iterable[str], today: date, keep_weeks: int = 12) -> list[str]:
    """Weekly tags older than `keep_weeks` weeks (pure)."""
    cutoff = today - timedelta(weeks=keep_weeks)
    out = []
    for t in tags:
        m = TAG.match(t)
        if m and date.fromisocalendar(int(m.group(1)), int(m.group(2)), 7) < cutoff:
            out.append(t)
    return sorted(out)


class Repo:
    """A working clone on the worker; every operation goes through the local executor as argv."""

    def __init__(self, path: Path, remote: str, cfg: GitConfig) -> None:
        self.path, self.remote, self.cfg = path, remote, cfg
        self.ex = LocalExecutor()
        self.env = git_env(cfg)

    def git(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        return self.ex.run(["git", "-C", str(self.path), *args], env=self.env, timeout=timeout, check=check).stdout_text

    def sync(self) -> None:
        """Clone, or fetch and reset to the remote branch (drops anything a crashed run left behind)."""
        branch = self.cfg.branch
        if not (self.path / ".git").exists():
            self.path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", branch)
            self.git("remote", "add", "origin", self.remote)
        self.git("remote", "set-url", "origin", self.remote)
        try:
            self.git("fetch", "-q", "--force", "--prune", "--prune-tags", "--tags", "origin")
        except CommandFailed as exc:
            raise OpsError(f"cannot fetch {self.remote}: {exc.result.stderr_text.strip()[-300:]}") from exc
        if self.git("ls-remote", "--heads", "origin", branch).strip():
            self.git("checkout", "-q", "-B", branch, f"origin/{branch}")
            self.git("reset", "-q", "--hard", f"origin/{branch}")
        self.git("clean", "-q", "-fdx")

    def read(self, prefix: str = "") -> dict[str, str]:
        out = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and not rel.startswith(".git/") and rel.startswith(prefix):
                out[rel] = p.read_text()
        return out

    def replace(self, files: dict[str, str], prefix: str) -> None:
        """Make the tree under `prefix` exactly `files` (others under it are removed)."""
        for rel in self.read(prefix):
            if rel not in files:
                (self.path / rel).unlink()
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)

    def commit_if_changed(self, message: str) -> bool:
        self.git("add", "-A")
        if self.git("status", "--porcelain").strip() == "":
            return False
        self.git("commit", "-q", "-m", message)
        return True

    def push(self, tags: Iterable[str] = (), delete_tags: Iterable[str] = ()) -> None:
        """Push the branch and tags; on rejection, undo the local commit so the next run starts clean."""
        refs = [f"HEAD:refs/heads/{self.cfg.branch}", *[f"+refs/tags/{t}:refs/tags/{t}" for t in tags],
                *[f":refs/tags/{t}" for t in delete_tags]]
        try:
            self.git("push", "-q", "--atomic", "origin", *refs, timeout=600)
        except CommandFailed as exc:
            self.sync()
            raise OpsError(f"push to {self.remote} was rejected; nothing was published and the local clone was "
                           f"reset: {exc.result.stderr_text.strip()[-400:]}") from exc

    def tags(self) -> list[str]:
        return self.git("tag", "--list").split()

    def tag(self, name: str) -> None:
        self.git("tag", "-f", name)


def repo_for(cfg: StackConfig, remote: str | None, name: str) -> Repo:
    """The working clone for one export, kept in the state directory between runs."""
    if not remote:
        raise OpsError(f"no git remote configured for {name} (git.n8n_remote / git.config_remote)")
    return Repo(cfg.state_dir.expanduser() / name, remote, cfg.git)


def today() -> date:
    return datetime.now().astimezone().date()
