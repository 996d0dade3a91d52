"""Local folders that hold plaintext dumps (tonight's copy, a verification's or a restore's download), named after
the process that owns them, so a run killed half way (OOM, SIGKILL, a lost worker) does not leave a database in
the clear on the worker's disk forever: the next folder made with the same prefix removes those of dead owners.

A name is `{prefix}{pid namespace}.{pid}.{start time}-{random}`; the owner is alive while a process with that pid
and that start time exists in our pid namespace. A folder from another namespace (a container sharing /tmp) is
never judged; one in the old `{prefix}{random}` form counts as dead after LEGACY_AGE_S.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

LEGACY_AGE_S = 24 * 3600
_LEGACY = re.compile(r"[a-z0-9_]{8}")  # what tempfile.mkdtemp appends
_OWNED = re.compile(r"(\d+)\.(\d+)\.(\d+)-[a-z0-9_]{8}")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]") or "0"
    except OSError:
        return "0"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: a pid that answers signal 0 is alive, start time unknown
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "0"
    return stat.rpartition(")")[2].split()[19]  # field 22; the command name may hold spaces and parentheses


def owned_dir(prefix: str, base: str | None = None) -> Path:
    """A new private folder for plaintext spools; first removes the folders of `prefix` whose owner is dead."""
    drop_orphans(prefix, base)
    pid = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_pid_namespace()}.{pid}.{_start_time(pid) or 0}-", dir=base))


def orphan_file(prefix: str, name: str, base: str | None = None) -> Path | None:
    """The file `name` in a folder of `prefix` whose owning process is gone (a killed run's), None if there is none
    on this worker. Its content is the caller's to check (against a manifest's hash)."""
    for folder in _orphans(prefix, base):
        path = folder / name
        if not path.is_symlink() and path.is_file():
            return path
    return None


def drop_orphans(prefix: str, base: str | None = None) -> list[str]:
    """Remove the folders `prefix` names whose owning process is gone; returns their paths."""
    dropped = []
    for folder in _orphans(prefix, base):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            dropped.append(str(folder))
            log.warning("removed %s (%.1f MiB): a plaintext spool a killed run left on this worker",
                        folder, size / (1 << 20))
    return dropped


def _orphans(prefix: str, base: str | None) -> list[Path]:
    """This user's folders of `prefix` (not symlinks) whose owner in our pid namespace is gone, and old-form ones
    older than LEGACY_AGE_S."""
    root = Path(base or tempfile.gettempdir())
    namespace, uid, found = _pid_namespace(), os.getuid(), []
    try:
        entries = sorted((e for e in os.scandir(root) if e.name.startswith(prefix)), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        rest = entry.name[len(prefix):]
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not entry.is_dir(follow_symlinks=False) or st.st_uid != uid:
            continue
        owned = _OWNED.fullmatch(rest)
        if owned:
            ns, pid, start = owned.groups()
            if ns != namespace or _start_time(int(pid)) in (start, "0"):
                continue
        elif not (_LEGACY.fullmatch(rest) and time.time() - st.st_mtime > LEGACY_AGE_S):
            continue
        found.append(Path(entry.path))
    return found
