"""One command suite, three executors: local process, SSH (paramiko to a real sshd), Docker exec (podman API)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from odoo_stack_ops.errors import CommandFailed, CommandTimeout
from odoo_stack_ops.executors.local import LocalExecutor

EXECUTORS = ["local", "ssh", "docker"]
INJECTIONS = ["'; touch /tmp/pwned-x #", "$(touch /tmp/pwned-y)", "`touch /tmp/pwned-z`", "a\nb", "&& id", "\\'\""]


@pytest.fixture(params=EXECUTORS)
def executor(request):
    if request.param == "local":
        return LocalExecutor()
    return request.getfixturevalue(f"{request.param}_executor")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_exit_codes_and_streams_apart(executor):
    r = executor.run(["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    assert executor.run(["true"]).ok


def test_failure_raises_with_masked_command_and_stderr_tail(executor):
    with pytest.raises(CommandFailed) as err:
        executor.run(["sh", "-c", "echo first >&2; echo last-line >&2; exit 3"],
                     env={"PGPASSWORD": SecretStr("sekr1t-pass")})
    text = str(err.value)
    assert "exit code 3" in text and "last-line" in text and "PGPASSWORD=***" in text
    assert "sekr1t-pass" not in text and err.value.result.exit_code == 3


def test_environment_reaches_the_command_and_secrets_stay_out_of_argv(executor):
    secret = "env-secret-" + os.urandom(4).hex()
    script = 'echo "$A|$B"; for p in /proc/[0-9]*/cmdline; do cat "$p" 2>/dev/null; echo; done'
    r = executor.run(["sh", "-c", script], env={"A": "plain value", "B": SecretStr(secret)})
    first, _, process_list = r.stdout.decode(errors="replace").partition("\n")
    assert first == f"plain value|{secret}"
    assert secret not in process_list  # no process on that side shows it in its command line


def test_timeout_stops_the_command(executor):
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        executor.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 20


def test_stdin_is_streamed(executor):
    chunks = (bytes([65 + i % 26]) * 100_000 for i in range(30))
    r = executor.run(["sh", "-c", "wc -c"], stdin=chunks)
    assert r.stdout.strip() == b"3000000"


def test_a_failing_stdin_producer_fails_the_run_with_its_own_error(executor):
    """A restore's tar stream refusing a corrupt object mid-way: the command sees end of input (and `cat` would
    exit 0 with half the data), the caller must get the producer's error instead."""
    class Refused(Exception):
        pass

    def chunks():
        yield b"x" * 100_000
        raise Refused("object 2 is corrupt")

    with pytest.raises(Refused, match="object 2 is corrupt"):
        executor.run(["sh", "-c", "cat > /dev/null"], stdin=chunks())


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_attempts_stay_literal(executor, value):
    r = executor.run(["printf", "%s", value])
    assert r.stdout.decode() == value
    assert executor.run(["sh", "-c", "ls /tmp/pwned-* 2>/dev/null | wc -l"]).stdout.strip() == b"0"


def test_200_mb_streamed_without_growing_memory(executor):
    total = 200 * 1024 * 1024
    before = rss_mb()
    seen = 0
    with executor.stream(["head", "-c", str(total), "/dev/zero"]) as out:
        while chunk := out.read(1 << 20):
            seen += len(chunk)
    assert seen == total and out.result.exit_code == 0
    assert rss_mb() - before < 64, f"RSS grew {rss_mb() - before:.0f} MB"


def test_stream_failure_raises_after_reading(executor):
    with pytest.raises(CommandFailed), executor.stream(["sh", "-c", "echo partial; exit 4"]) as out:
        assert out.read() == b"partial\n"


def test_put_and_get_round_trip(executor, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    remote = f"/tmp/ops-test-{os.getpid()}-{type(executor).__name__}.bin"
    executor.put(str(src), remote)
    executor.get(remote, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert executor.run(["stat", "-c", "%a", remote]).stdout == b"600\n"  # secrets by default: owner only
    executor.run(["chmod", "666", remote])
    executor.put(str(src), remote, mode=0o640)  # an existing file gets the asked mode too
    assert executor.run(["stat", "-c", "%a", remote]).stdout == b"640\n"
    executor.run(["rm", "-f", remote])


def test_missing_command_is_a_clear_failure(executor):
    r = executor.run(["definitely-not-a-command-xyz"], check=False)
    assert r.exit_code == 127


def test_logged_command_is_masked(executor, caplog):
    with caplog.at_level(logging.DEBUG, logger="odoo_stack_ops.exec"):
        executor.run(["true"], env={"PGPASSWORD": SecretStr("masked-in-log-1")})
    assert "PGPASSWORD=***" in caplog.text and "masked-in-log-1" not in caplog.text
