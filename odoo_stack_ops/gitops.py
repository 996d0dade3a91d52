"""Git on the worker for the export flows: commit only on change, weekly tags, pruning, push — nothing half-done.

Credentials never reach argv, the remote URL or `.git/config`: an HTTPS token travels as an `http.extraHeader`
set through `GIT_CONFIG_*` environment variables (a SecretStr, masked wherever the command is shown); SSH uses a
key and a known_hosts file with strict checking, through a GIT_SSH_COMMAND quoted with shlex.

Every push first passes the guard: whatever would be sent that the remote does not have yet (`git log -p` of
the outgoing commits) is searched for the configured secret values and well-known token shapes; a hit refuses
the push, naming file and line, never the value.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from odoo_stack_ops import redact
from odoo_stack_ops.config import GitConfig, StackConfig
from odoo_stack_ops.errors import CommandFailed, ConfigError, ConnectError, OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.executors.local import LocalExecutor

log = logging.getLogger(__name__)
WEEK_TAG = re.compile(r"^n8n-(\d{4})-W(\d{2})$")
_COMMIT_START, _MESSAGE_END = "\x1e", "\x1f"
_HUNK = re.compile(r"^@@+ (?:-\d+(?:,\d+)? )+\+(\d+)(?:,\d+)? @@")
_MIN_SECRET_LINE = 8  # a line of a multi-line secret shorter than this would match ordinary text
_TRANSIENT_GIT = re.compile(r"could not resolve host|connection (timed out|refused|reset)|early eof|"
                            r"the remote end hung up unexpectedly|http 5\d\d|returned error: 5\d\d", re.IGNORECASE)


def check_remote(remote: str) -> str:
    """The remote, refused when it carries a password or token (those belong in git.token, never in a URL)."""
    parts = urlsplit(remote)
    if parts.scheme in ("http", "https") and parts.password:
        raise ConfigError("the git remote URL holds a password or token: remove it from the URL and set GIT_TOKEN")
    if parts.scheme not in ("", "http", "https", "ssh", "file") and not re.match(r"^[\w.-]+@[\w.-]+:", remote):
        raise ConfigError(f"unsupported git remote {shown_remote(remote)!r}: use https://, ssh://, user@host:path "
                          "or a local path")
    return remote


def shown_remote(remote: str) -> str:
    """The remote as it may be logged: any user-info of an http(s) URL masked."""
    parts = urlsplit(remote)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        return parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")).geturl()
    return remote


def author_identity(author: str) -> tuple[str, str]:
    """('name', 'email') from 'Name <email>' (email defaults to ops@localhost)."""
    m = re.fullmatch(r"\s*(.*?)\s*<([^<>\s]+)>\s*", author)
    return (m.group(1) or "odoo-stack-ops", m.group(2)) if m else (author.strip() or "odoo-stack-ops", "ops@localhost")


def git_env(cfg: GitConfig, remote: str | None = None) -> dict[str, str | SecretStr]:
    """Environment for every git command: identity, no prompts, the token header (scoped to the remote's host
    when it is an http(s) URL, so a redirect elsewhere never receives it), the SSH command (pure)."""
    name, email = author_identity(cfg.author)
    env: dict[str, str | SecretStr] = {
        "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": name, "GIT_COMMITTER_NAME": name,
        "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_EMAIL": email, "GIT_CONFIG_NOSYSTEM": "1",
    }
    if cfg.token is not None:
        basic = base64.b64encode(f"x-access-token:{cfg.token.get_secret_value()}".encode()).decode()
        parts = urlsplit(remote or "")
        scope = f"{parts.scheme}://{parts.netloc}/." if parts.scheme in ("http", "https") else ""
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{scope}extraHeader",
                "GIT_CONFIG_VALUE_0": SecretStr(f"Authorization: Basic {basic}")}
    if cfg.ssh_key_file or cfg.known_hosts:
        env["GIT_SSH_COMMAND"] = ssh_command(cfg.ssh_key_file, cfg.known_hosts)
    return env


def ssh_command(key_file: Path | None, known_hosts: Path | None) -> str:
    """`ssh` with batch mode and strict host-key checking against `known_hosts`, every path shell-quoted (pure)."""
    parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20"]
    if known_hosts:
        parts += ["-o", f"UserKnownHostsFile={Path(known_hosts).expanduser()}", "-o", "GlobalKnownHostsFile=/dev/null"]
    if key_file:
        parts += ["-i", str(Path(key_file).expanduser()), "-o", "IdentitiesOnly=yes"]
    return shlex.join(parts)


def week_tag(day: date) -> str:
    """The ISO-week tag of `day`, e.g. n8n-2026-W48."""
    year, week, _ = day.isocalendar()
    return f"n8n-{year}-W{week:02d}"


def tags_to_prune(tags: Iterable[str], today: date, keep_weeks: int = 12) -> list[str]:
    """Weekly tags whose week ended more than `keep_weeks` weeks before `today`; other tags are never touched."""
    if keep_weeks < 1:
        raise ValueError("keep_weeks must be at least 1")
    cutoff = today - timedelta(weeks=keep_weeks)
    out = []
    for t in tags:
        m = WEEK_TAG.match(t)
        if not m:
            continue
        try:
            week_end = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 7)
        except ValueError:
            continue
        if week_end < cutoff:
            out.append(t)
    return sorted(out)


class PushRefused(OpsError):
    """The outgoing commits hold a secret; nothing was pushed. Never transient: a retry would refuse again."""


@dataclass(frozen=True)
class Finding:
    """Where the outgoing commits hold something that looks like a secret (never the value itself)."""

    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path} line {self.line} ({self.kind})"


def scan_outgoing(log: str, secrets: Iterable[str]) -> list[Finding]:
    """Findings for every line the outgoing `git log -p` (formatted by `Repo.outgoing`) adds, and every commit
    message line, that holds one of `secrets` or a well-known token shape (pure)."""
    needles = sorted({part for value in secrets for part in _needles(value)}, key=len, reverse=True)
    found: list[Finding] = []
    sha, path, number, state = "", "", 0, "diff"
    for line in log.split("\n"):  # not splitlines(): it also splits at the \x1e that marks a commit
        if line.startswith(_COMMIT_START):
            sha, state, number = line.removeprefix(_COMMIT_START).strip()[:12], "message", 0
            continue
        if state == "message":
            text, ended, _ = line.partition(_MESSAGE_END)
            number += 1
            found += _findings(f"commit {sha} message", number, text, needles)
            state = "diff" if ended else state
            continue
        if line.startswith("diff --git "):
            path, state = "", "header"
        elif state == "header" and line.startswith("+++ "):
            target = line[4:].strip().strip('"')
            path = target.removeprefix("b/") if target != "/dev/null" else ""
        elif (m := _HUNK.match(line)) and state in ("header", "hunk"):
            state, number = "hunk", int(m.group(1))
        elif state == "hunk" and line.startswith("+"):
            found += _findings(path or "?", number, line[1:], needles)
            number += 1
        elif state == "hunk" and line.startswith(" "):
            number += 1
    return found


def _needles(value: str) -> list[str]:
    lines = [part.strip() for part in value.splitlines()]
    return [value] if len(lines) <= 1 else [part for part in lines if len(part) >= _MIN_SECRET_LINE]


def _findings(path: str, number: int, text: str, needles: list[str]) -> list[Finding]:
    kinds = ["configured secret value"] if any(n in text for n in needles) else []
    kinds += sorted({kind for kind, _, _ in redact.token_shapes(text)})
    return [Finding(path, number, kind) for kind in kinds]


def today(tz: str = "Asia/Singapore") -> date:
    """Today's date in the stack's time zone (the weekly tag follows the schedule's calendar)."""
    return datetime.now(ZoneInfo(tz)).date()


class Repo:
    """A working clone on the worker; every git call is an argv list run by an Executor with `git_env`."""

    def __init__(self, path: Path, remote: str, cfg: GitConfig, executor: Executor | None = None) -> None:
        self.path, self.remote, self.cfg = Path(path), check_remote(remote), cfg
        self.ex = executor or LocalExecutor()
        self.env = git_env(cfg, self.remote)

    def git(self, *args: str, check: bool = True, timeout: float = 300, stdin: bytes | None = None) -> str:
        """Run `git -C <clone> args…`; returns stdout (raw, not redacted: it is repository content)."""
        result = self.ex.run(["git", "-C", str(self.path), *args], env=self.env, timeout=timeout, check=check,
                             stdin=stdin)
        return result.stdout.decode("utf-8", "replace")

    @contextlib.contextmanager
    def locked(self) -> Iterator[Repo]:
        """Holds an exclusive lock on the clone so two runs never interleave their commits."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / f".{self.path.name}.lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise OpsError(f"another run is using {self.path}; try again when it has finished") from exc
            yield self

    def sync(self) -> None:
        """Clone, or fetch and hard-reset to the remote branch: whatever a failed run left behind is dropped."""
        branch = self.cfg.branch
        self._drop_stale_locks()
        if not (self.path / ".git").exists():
            self.path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", branch)
            self.git("remote", "add", "origin", self.remote)
        self.git("remote", "set-url", "origin", self.remote)
        try:
            self.git("fetch", "-q", "--force", "--prune", "--prune-tags", "--tags", "origin")
        except CommandFailed as exc:
            stderr = exc.result.stderr_text.strip()[-300:]
            kind = ConnectError if _TRANSIENT_GIT.search(stderr) else OpsError
            raise kind(f"cannot fetch {shown_remote(self.remote)}: {stderr}") from exc
        if self.remote_has_branch():
            self.git("checkout", "-q", "-B", branch, f"origin/{branch}")
            self.git("reset", "-q", "--hard", f"origin/{branch}")
        else:  # an empty remote: start the branch from nothing (drops a local commit a failed push left)
            self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self.git("update-ref", "-d", f"refs/heads/{branch}", check=False)
            self.git("read-tree", "--empty")
        self.git("clean", "-q", "-fdx")

    def _drop_stale_locks(self) -> None:
        """A git killed half way (its run's worker killed) leaves its lock files, and every git after it fails on
        them ('index.lock': File exists) until someone removes them by hand. Under the clone's flock no run of ours
        uses the clone; a lock is removed only when no process works inside the clone either (a killed run's git
        may outlive it, and git works with its current directory in the clone)."""
        git_dir = self.path / ".git"
        locks = [*git_dir.glob("*.lock"), *git_dir.glob("refs/**/*.lock")] if git_dir.is_dir() else []
        if not locks:
            return
        names = ", ".join(sorted(str(p.relative_to(self.path)) for p in locks))
        if _working_in(self.path):
            raise OpsError(f"a git process still works in {self.path} (left by a killed run?) and holds {names}; "
                           "run again once it has ended")
        for lock in locks:
            lock.unlink(missing_ok=True)
        log.warning("removed lock files a git killed half way left in %s: %s", self.path, names)

    def remote_has_branch(self) -> bool:
        return bool(self.git("rev-parse", "--verify", "-q", f"refs/remotes/origin/{self.cfg.branch}", check=False)
                    .strip())

    def read(self, prefix: str = "") -> dict[str, str]:
        """{path: text} of the tracked-tree files under `prefix` in the working copy."""
        out = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and not rel.startswith(".git/") and rel.startswith(prefix):
                out[rel] = p.read_text(encoding="utf-8")
        return out

    def replace(self, files: dict[str, str], prefix: str) -> None:
        """Make the files under `prefix` exactly `files`: others there are removed, these (re)written."""
        for rel in files:
            _safe_relative(rel)
        for rel in self.read(prefix):
            if rel not in files:
                (self.path / rel).unlink()
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")

    def commit_if_changed(self, message: str) -> bool:
        """Stage everything and commit; False (no commit) when the tree did not change."""
        self.git("add", "-A")
        if not self.git("status", "--porcelain").strip():
            return False
        self.git("commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message)
        return True

    def tags(self) -> list[str]:
        return self.git("tag", "--list").split()

    def tag(self, name: str) -> None:
        """Point tag `name` at HEAD (moved when it exists: the weekly tag follows the week's last commit).
        Annotated, so the tag records when the export made it: the health sweep's freshness check reads that
        date (a lightweight tag has only its commit's, which is old whenever nothing changed)."""
        self.git("tag", "-f", "-a", "-m", f"{name}: export of this week", name)

    def outgoing(self, tips: Iterable[str]) -> str:
        """`git log -p` (text, no colour, merges against their first parent) of every commit reachable from
        `tips` that the remote does not have, as the remote advertises it now."""
        try:
            advertised = self.git("ls-remote", "origin", timeout=120)
        except CommandFailed as exc:
            stderr = exc.result.stderr_text.strip()[-300:]
            kind = ConnectError if _TRANSIENT_GIT.search(stderr) else OpsError
            raise kind(f"cannot list {shown_remote(self.remote)}: {stderr}") from exc
        have = sorted({line.split()[0] for line in advertised.splitlines() if line.strip()})
        revs = "\n".join([*tips, *[f"^{sha}" for sha in have]]) + "\n"  # unknown objects: --ignore-missing
        return self.git("-c", "core.quotepath=false", "log", "-p", "--text", "--no-color", "--no-ext-diff",
                        "--no-textconv", "--diff-merges=first-parent", "--ignore-missing",
                        f"--format={_COMMIT_START}%H%n%B{_MESSAGE_END}", "--stdin", stdin=revs.encode(), timeout=600)

    def guard(self, tips: Iterable[str]) -> None:
        """Refuse (PushRefused) when the outgoing commits add a configured secret value or a well-known token
        shape; the clone is reset to the remote first, so the refused commit is never pushed by a later run."""
        findings = scan_outgoing(self.outgoing(tips), redact.registered())
        if not findings:
            return
        with contextlib.suppress(OpsError):
            self.sync()
        shown = "; ".join(str(f) for f in findings[:20]) + (f"; … {len(findings) - 20} more" if len(findings) > 20
                                                              else "")
        raise PushRefused(
            f"refusing to push to {shown_remote(self.remote)}: the outgoing commits hold what looks like a secret "
            f"at {shown}. Nothing was pushed, and the local clone {self.path} was reset to the remote. Remove the "
            "value at its source (or redact it) and run again: every push is refused until the outgoing commits "
            f"are clean. The clone is a rebuildable cache: if it still holds the commit, delete {self.path}.")

    def push(self, tags: Iterable[str] = (), delete_tags: Iterable[str] = ()) -> None:
        """Guard, then push branch, tags and tag deletions atomically; on any failure reset to the remote and
        raise, so nothing is left half-published and the next run starts clean and retries."""
        tags = list(tags)
        self.guard(["HEAD", *[f"refs/tags/{t}" for t in tags]])
        refs = [f"HEAD:refs/heads/{self.cfg.branch}", *[f"+refs/tags/{t}:refs/tags/{t}" for t in tags],
                *[f":refs/tags/{t}" for t in delete_tags]]
        try:
            self.git("push", "-q", "--atomic", "--porcelain", "origin", *refs, timeout=600)
        except CommandFailed as exc:
            stderr = exc.result.stderr_text.strip()[-400:]
            with contextlib.suppress(OpsError):
                self.sync()
            kind = ConnectError if _TRANSIENT_GIT.search(stderr) else OpsError
            raise kind(f"push to {shown_remote(self.remote)} was rejected; nothing was published and the local "
                       f"clone was reset to the remote, so the next run retries: {stderr}") from exc


def _working_in(path: Path) -> bool:
    """Some other process of this machine has its current directory in `path` (or under it)."""
    root = str(path.resolve())
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        if cwd.parent.name == str(os.getpid()):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's
            where = os.readlink(cwd)
            if where == root or where.startswith(root + "/"):
                return True
    return False


def _safe_relative(rel: str) -> str:
    if rel.startswith("/") or ".." in Path(rel).parts or rel.startswith(".git"):
        raise OpsError(f"refusing to write {rel!r} outside the export tree")
    return rel


def repo_for(cfg: StackConfig, remote: str | None, name: str, git: GitConfig | None = None) -> Repo:
    """The working clone for one export, kept in the state directory between runs."""
    if not remote:
        raise ConfigError(f"no git remote configured for {name} (git.n8n_remote / git.config_remote)")
    return Repo(cfg.state_dir.expanduser() / name, remote, git or cfg.git)
