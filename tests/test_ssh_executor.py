"""SSH executor against a real sshd: environment over stdin, remote timeouts, early hang-up, one connection shared
by threads, reconnects, host-key messages, SFTP modes and the unix-socket bridge.

The behaviour shared with the local and Docker executors (exit codes, injection, 200 MB streamed in bounded
memory, put/get) is tested once for all three in tests/test_executors.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from odoo_stack_ops.command import Command
from odoo_stack_ops.errors import CommandFailed, CommandTimeout, ConnectError, HostKeyError, is_transient
from odoo_stack_ops.executors.ssh import SSHExecutor
from odoo_stack_ops.prefect_local import free_port
from odoo_stack_ops.sandbox.sshd import keygen

TRICKY = "  two spaces, a tab\there, $(id) `id` $HOME 'single' \"double\" \\backslash ; touch /tmp/pwned-env #  "


# -- environment and stdin -------------------------------------------------------------------------------------
def test_env_values_arrive_literally_and_stdin_follows_intact(ssh_executor):
    secret = "pw-" + os.urandom(6).hex()
    r = ssh_executor.run(["sh", "-c", 'printf "%s|%s\\n" "$A" "$S"; cat'], env={"A": TRICKY, "S": SecretStr(secret)},
                         stdin=[b"first line\n", b"second", b" line\n"])
    assert r.stdout.decode() == f"{TRICKY}|{secret}\nfirst line\nsecond line\n"
    assert ssh_executor.run(["sh", "-c", "ls /tmp/pwned-env 2>/dev/null | wc -l"]).stdout.strip() == b"0"


def test_secret_is_in_the_environment_but_not_in_any_command_line(ssh_executor):
    """The command reads its own and its parent's /proc entries: the secret is only in its environ."""
    secret = "sec-" + os.urandom(6).hex()
    script = ('cat /proc/$$/cmdline; echo; cat /proc/$PPID/cmdline; echo; echo ---; '
              'tr "\\0" "\\n" < /proc/$$/environ | grep "^DB_PASSWORD="')
    r = ssh_executor.run(["sh", "-c", script], env={"DB_PASSWORD": SecretStr(secret)})
    cmdlines, _, environ = r.stdout.decode().partition("---\n")
    assert "/proc/$$/cmdline" in cmdlines and secret not in cmdlines
    assert environ.strip() == f"DB_PASSWORD={secret}"


def test_cwd_with_quotes_and_spaces(ssh_executor):
    base = Path(tempfile.mkdtemp(prefix="ops-cwd-"))
    odd = base / "a b'c; touch pwned"
    odd.mkdir()
    try:
        r = ssh_executor.run(Command(("pwd",), {"X": "1"}, cwd=str(odd)))
        assert r.stdout.decode().strip() == str(odd)
        assert not (base / "pwned").exists()
    finally:
        shutil.rmtree(base)


# -- timeouts and early exits ----------------------------------------------------------------------------------
def test_stream_timeout_raises_and_stops_the_remote_command(ssh_executor):
    marker = f"ops-timeout-{os.getpid()}-{time.monotonic_ns()}"
    start = time.monotonic()
    with pytest.raises(CommandTimeout), ssh_executor.stream(["sh", "-c", f"echo started; sleep 30; : {marker}"],
                                                            timeout=1) as out:
        assert out.read(8) == b"started\n"
        out.read()
    assert time.monotonic() - start < 10
    pattern = marker[:-1] + f"[{marker[-1]}]"  # does not match the pgrep's own shell
    assert ssh_executor.run(["sh", "-c", f"pgrep -f '{pattern}' || true"]).stdout.strip() == b""


def test_timeout_kills_a_command_that_ignores_sigterm(ssh_executor):
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as err:
        ssh_executor.run(["sh", "-c", "trap '' TERM; sleep 30"], timeout=1)
    assert time.monotonic() - start < 10
    assert "timeout" in str(err.value)


def test_a_quick_exit_124_is_a_failure_not_a_timeout(ssh_executor):
    with pytest.raises(CommandFailed) as err:
        ssh_executor.run(["sh", "-c", "exit 124"], timeout=30)
    assert not isinstance(err.value, CommandTimeout) and err.value.result.exit_code == 124


def test_leaving_an_endless_stream_early_does_not_hang(ssh_executor):
    start = time.monotonic()
    with ssh_executor.stream(["cat", "/dev/zero"], check=False) as out:
        assert out.read(10) == b"\0" * 10
    assert time.monotonic() - start < 15
    assert out.result is not None and out.result.exit_code != 0
    assert ssh_executor.run(["echo", "still usable"]).stdout == b"still usable\n"


def test_leaving_a_stream_with_a_short_tail_unread_still_succeeds(ssh_executor):
    with ssh_executor.stream(["sh", "-c", "echo head; echo tail"]) as out:
        assert out.read(5) == b"head\n"
    assert out.result is not None and out.result.exit_code == 0


# -- the connection --------------------------------------------------------------------------------------------
def test_one_connection_serves_several_threads_at_once(ssh_executor):
    ssh_executor.run(["true"])
    transport = ssh_executor.transport()
    barrier_file = Path(tempfile.mkdtemp(prefix="ops-par-"))
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        # each command waits until all 8 have started: only concurrent channels get past this
        script = f'touch {barrier_file}/{i}; n=0; while [ $(ls {barrier_file} | wc -l) -lt 8 ]; do ' \
                 f'n=$((n+1)); [ $n -gt 200 ] && exit 9; sleep 0.05; done; echo {i}'
        results[i] = ssh_executor.run(["sh", "-c", script]).stdout

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shutil.rmtree(barrier_file)
    assert results == {i: f"{i}\n".encode() for i in range(8)}
    assert ssh_executor.transport() is transport  # no reconnect happened


def test_reconnects_after_the_connection_dropped(ssh_executor):
    ssh_executor.run(["true"])
    ssh_executor.transport().close()
    assert ssh_executor.run(["echo", "again"]).stdout == b"again\n"


def test_connection_lost_mid_command_is_a_transient_connect_error(ssh_executor):
    with pytest.raises(ConnectError) as err, ssh_executor.stream(["sh", "-c", "echo go; sleep 20"]) as out:
        assert out.read(3) == b"go\n"
        ssh_executor.transport().close()
        out.read()
    assert is_transient(err.value)


def test_unreachable_host_is_a_transient_connect_error(sshd):
    ex = SSHExecutor(sshd.ssh_config(port=free_port(), connect_timeout_s=3))
    with pytest.raises(ConnectError) as err:
        ex.run(["true"])
    assert not isinstance(err.value, HostKeyError) and is_transient(err.value)
    assert "127.0.0.1" in str(err.value)


def test_changed_host_key_message_shows_both_fingerprints_and_the_fix(sshd, tmp_path):
    other = keygen(tmp_path / "other")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {kind} {key}\n")

    def fingerprint(pub: Path) -> str:
        return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                              check=True).stdout.split()[1]

    with pytest.raises(HostKeyError) as err:
        SSHExecutor(sshd.ssh_config(known_hosts=wrong)).run(["true"])
    text = str(err.value)
    assert fingerprint(sshd.host_key.with_suffix(".pub")) in text  # what the server showed
    assert fingerprint(other.with_suffix(".pub")) in text  # what known_hosts expected
    assert f"ssh-keygen -R '[{sshd.host}]:{sshd.port}' -f {wrong}" in text
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> {wrong}" in text
    assert not is_transient(err.value)


def test_opt_out_warns_on_every_connect_and_saves_nothing(sshd, tmp_path, caplog):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    ex = SSHExecutor(sshd.ssh_config(known_hosts=empty, strict_host_key_checking=False))
    with caplog.at_level(logging.WARNING, logger="odoo_stack_ops.executors.ssh"):
        try:
            ex.run(["true"])
            ex.transport().close()
            ex.run(["true"])
        finally:
            ex.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "host key checking is OFF" in r.message]
    assert len(warnings) == 2
    assert empty.read_text() == ""


# -- files -----------------------------------------------------------------------------------------------------
def test_put_sets_the_mode_and_get_of_a_missing_file_raises(ssh_executor, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("hello")
    remote = f"/tmp/ops-put-{os.getpid()}-{time.monotonic_ns()}"
    try:
        ssh_executor.put(str(src), remote, mode=0o640)
        assert ssh_executor.run(["stat", "-c", "%a", remote]).stdout.strip() == b"640"
        ssh_executor.put(str(src), remote)
        assert ssh_executor.run(["stat", "-c", "%a", remote]).stdout.strip() == b"600"
    finally:
        ssh_executor.run(["rm", "-f", remote])
    with pytest.raises(FileNotFoundError):
        ssh_executor.get(remote, str(tmp_path / "back"))


