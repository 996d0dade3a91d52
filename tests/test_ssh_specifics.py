"""What only the SSH executor does: strict host keys, the opt-out, the Docker socket through SSH."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from odoo_stack_ops.command import Command
from odoo_stack_ops.config import DockerConfig
from odoo_stack_ops.errors import AccessDenied, ConnectError, HostKeyError, is_transient
from odoo_stack_ops.executors.docker import docker_client, find_container
from odoo_stack_ops.executors.ssh import SSHExecutor, remote_command
from odoo_stack_ops.sandbox.sshd import keygen
from tests.checks import task_runs


def test_unknown_host_is_refused_with_a_fix(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as err:
        SSHExecutor(sshd.ssh_config(known_hosts=empty)).run(["true"])
    assert "not in" in str(err.value) and "ssh-keyscan" in str(err.value)


def test_changed_host_key_is_refused_with_a_fix(sshd, tmp_path):
    other = keygen(tmp_path / "other")
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {kind} {key}\n")
    with pytest.raises(HostKeyError) as err:
        SSHExecutor(sshd.ssh_config(known_hosts=wrong)).run(["true"])
    text = str(err.value)
    assert "CHANGED" in text and "ssh-keygen -R" in text


def test_opt_out_connects_and_warns(sshd, tmp_path, caplog):
    empty = tmp_path / "kh"
    empty.write_text("")
    with caplog.at_level(logging.WARNING):
        ex = SSHExecutor(sshd.ssh_config(known_hosts=empty, strict_host_key_checking=False))
        assert ex.run(["echo", "ok"]).stdout == b"ok\n"
        ex.close()
    assert "host key checking is OFF" in caplog.text
    assert empty.read_text() == ""  # a key accepted on trust is not written to known_hosts (strict runs refuse it)


def test_wrong_key_fails_at_the_first_attempt_and_says_what_to_fix(prefect_harness, sshd, tmp_path):
    """A refused key gets the same answer however often it is tried: the task fails once, not four times."""
    from prefect import flow, task

    from tasks.common import TRANSIENT_RETRIES

    cfg = sshd.ssh_config(key_file=keygen(tmp_path / "stranger"))

    @task(name="ssh-with-a-stranger-key", **TRANSIENT_RETRIES)
    def run_true() -> None:
        SSHExecutor(cfg).run(["true"])

    @flow(name="ssh-with-a-stranger-key")
    def night() -> None:
        run_true()

    state = night(return_state=True)
    ((run, history),) = task_runs(state.state_details.flow_run_id)["ssh-with-a-stranger-key"]
    assert run.run_count == 1 and history == ["Pending", "Running", "Failed"], history
    with pytest.raises(AccessDenied, match="authentication") as err:
        state.result()
    assert not isinstance(err.value, ConnectError) and not is_transient(err.value)
    assert "ssh.key_file" in str(err.value) and "authorized_keys" in str(err.value)


def test_remote_command_keeps_secrets_out_of_the_command_line():
    from pydantic import SecretStr

    line, preamble = remote_command(Command.of(["pg_dump", "db"], {"PGPASSWORD": SecretStr("s3cr3t-x")}), None)
    assert "s3cr3t-x" not in line and preamble == b"s3cr3t-x\n"
    assert "IFS= read -r PGPASSWORD" in line


def test_docker_api_through_ssh_finds_the_compose_service(sshd, podman, stack_containers):
    ssh = SSHExecutor(sshd.ssh_config())
    try:
        client = docker_client(DockerConfig(mode="ssh", remote_socket=podman.socket_path), ssh)
        odoo = find_container(client, "odoo-core", "sandbox")
        assert odoo.labels["com.docker.compose.service"] == "odoo-core"
        assert odoo.exec_run(["odoo", "--version"]).output.strip() == b"Odoo Server 18.0"
        assert len(client.containers.list()) >= 4
        client.close()
    finally:
        ssh.close()


def test_missing_service_lists_what_exists(docker_client, stack_containers):
    from odoo_stack_ops.errors import OpsError

    with pytest.raises(OpsError, match="no running container for service 'nope'") as err:
        find_container(docker_client, "nope", "sandbox")
    assert "sandbox-odoo-core-1" in str(err.value)


def test_private_key_text_connects_instead_of_a_key_file(sshd):
    """A worker in a container gets the key from a Secret block (ssh.private_key), with no key file on disk."""
    text = sshd.key_file.read_text()
    with SSHExecutor(sshd.ssh_config(key_file=None, private_key=SecretStr(text))) as ex:
        assert ex.run(["echo", "ok"]).stdout == b"ok\n"
    with pytest.raises(ConnectError, match="not an Ed25519"):
        SSHExecutor(sshd.ssh_config(key_file=None, private_key=SecretStr("not a key"))).run(["true"])
