"""Plaintext spools (odoo_stack_ops/backup/spools.py): a folder whose owner was killed is removed by the next
one made with the same prefix; a live owner's, another pid namespace's and anything not ours are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from odoo_stack_ops.backup import spools

ROOT = Path(__file__).resolve().parent.parent
OWNER = """
import sys, time
from odoo_stack_ops.backup import spools
d = spools.owned_dir("odoo-dump-", sys.argv[1])
(d / "odoo_core.dump.zst").write_bytes(b"plaintext rows" * 1000)
print(d, flush=True)
time.sleep(600)
"""


def owner(base: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(base)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_owners_spool_goes_with_the_next_one_and_a_live_owners_stays(tmp_path):
    killed, killed_dir = owner(tmp_path)
    live, live_dir = owner(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert (killed_dir / "odoo_core.dump.zst").exists()
        mine = spools.owned_dir("odoo-dump-", str(tmp_path))
        assert not killed_dir.exists()
        assert (live_dir / "odoo_core.dump.zst").exists() and mine.is_dir()
        assert spools.drop_orphans("odoo-dump-", str(tmp_path)) == []  # ours is alive too
    finally:
        live.kill()
        live.wait()
    assert spools.drop_orphans("odoo-dump-", str(tmp_path)) == [str(live_dir)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]


def test_a_reused_pid_does_not_keep_a_dead_owners_spool(tmp_path):
    """Same pid, another start time: the owner died and the pid went to a new process (here, us)."""
    dead = tmp_path / f"odoo-verify-{spools._pid_namespace()}.{os.getpid()}.1-abcd1234"
    dead.mkdir()
    assert spools.drop_orphans("odoo-verify-", str(tmp_path)) == [str(dead)]


def test_what_cannot_be_judged_or_is_not_ours_is_kept(tmp_path):
    old = time.time() - spools.LEGACY_AGE_S - 60
    legacy_old, legacy_young = tmp_path / "odoo-restore-abcd1234", tmp_path / "odoo-restore-wxyz_678"
    other_ns = tmp_path / "odoo-restore-1.99999999.5-abcd1234"  # another container's pid namespace
    user_dir, a_file = tmp_path / "odoo-restore-notes", tmp_path / "odoo-restore-zzzz9999"
    for d in (legacy_old, legacy_young, other_ns, user_dir):
        d.mkdir()
    a_file.write_text("not a folder")
    for p in (legacy_old, other_ns, user_dir, a_file):
        os.utime(p, (old, old))
    assert spools.drop_orphans("odoo-restore-", str(tmp_path)) == [str(legacy_old)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (legacy_young, other_ns, user_dir, a_file))


def test_a_killed_owners_file_is_found_and_a_live_owners_is_not(tmp_path):
    """An interrupted upgrade's rollback restores from the killed run's plaintext copy; a live run's is not its."""
    killed, killed_dir = owner(tmp_path)
    live, live_dir = owner(tmp_path)
    try:
        assert spools.orphan_file("odoo-dump-", "odoo_core.dump.zst", str(tmp_path)) is None  # both alive
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert spools.orphan_file("odoo-dump-", "odoo_core.dump.zst", str(tmp_path)) == killed_dir / "odoo_core.dump.zst"
        assert spools.orphan_file("odoo-dump-", "other.dump.zst", str(tmp_path)) is None
        assert live_dir.exists()
    finally:
        live.kill()
        live.wait()
