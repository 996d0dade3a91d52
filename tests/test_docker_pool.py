"""The `ops-docker` work pool for real: the worker image built from ./Dockerfile with podman, `prefect worker
start --pool ops-docker` against podman's Docker API, and backup/nightly-docker run to Completed in a flow-run
container prefect-docker creates. The Prefect server keeps its state in PostgreSQL (the stack's own cluster).

Secrets reach the container only through Prefect Secret blocks: the stack file it mounts names them as
`prefect-secret:…`, so neither the container's environment, the job variables nor the image hold a value."""

from __future__ import annotations

import copy
import json
import re
import shutil

import pytest
import yaml

from odoo_stack_ops.sandbox.worker_image import image_size_mb
from tests.fixtures.stack import published

pytestmark = pytest.mark.integration

CONF = "/etc/odoo-stack-ops"
# stack-tree path -> the Secret block deployments/setup saves it in (from the variable named beside it)
SECRETS = {("database", "password"): ("DB_PASSWORD", "db-password"),
           ("spaces", "access_key_id"): ("SPACES_ACCESS_KEY_ID", "spaces-access-key-id"),
           ("spaces", "secret_access_key"): ("SPACES_SECRET_ACCESS_KEY", "spaces-secret-access-key"),
           ("mattermost", "webhook_url"): ("MATTERMOST_WEBHOOK_URL", "mattermost-webhook-url"),
           ("ssh", "private_key"): ("SSH_PRIVATE_KEY", "ssh-private-key")}


def container_stack(tree: dict, key_text: str) -> tuple[dict, dict[str, str]]:
    """The stack as a flow-run container sees it (secrets as block references, files under /etc/odoo-stack-ops,
    state in the user's home), and the environment deployments/setup turns into Secret blocks."""
    tree = copy.deepcopy(tree)
    tree["ssh"].pop("key_file")
    tree["ssh"]["private_key"] = key_text
    secret_env = {}
    for (section, field), (var, block) in SECRETS.items():
        secret_env[var] = tree[section][field]
        tree[section][field] = f"prefect-secret:{block}"
    tree["ssh"]["known_hosts"] = f"{CONF}/known_hosts"
    tree["database"]["sslrootcert"] = f"{CONF}/ca.crt"
    tree["state_dir"] = "/home/ops/state"
    tree["odoo"]["compose_dir"] = "/home/ops/state/compose"
    return tree, secret_env


def container_conf(conf, stack_tree: dict, sshd, pg_tls) -> dict[str, str]:
    """The folder a flow-run container mounts at CONF (stack file, known_hosts, the database's CA: no secret);
    returns the environment deployments/setup turns into Secret blocks."""
    conf.mkdir(mode=0o755)
    shutil.copy(sshd.known_hosts, conf / "known_hosts")
    shutil.copy(pg_tls.ca_file, conf / "ca.crt")
    tree, secret_env = container_stack(stack_tree, sshd.key_file.read_text())
    (conf / "stack.yaml").write_text(yaml.safe_dump(tree))
    for f in conf.iterdir():
        f.chmod(0o644)  # read by the image's unprivileged user; none of them holds a secret
    return secret_env


def docker_run_args(tag: str, conf) -> list[str]:
    """Job variables of a backup/nightly-docker run on the test bed: the image, host network, CONF mounted."""
    return ["--job-variable", f"image={tag}", "--job-variable", "network_mode=host",
            "--job-variable", "volumes=" + json.dumps([f"{conf}:{CONF}:ro"])]


@pytest.mark.timeout(900)  # a cold image build is 4-5 minutes of it on a loaded machine; cached, seconds
def test_backup_nightly_completes_in_a_docker_pool_container(stack_tree, stack_config, sshd, pg_tls, podman,
                                                             worker_image, docker_client, prefect_server, tmp_path):
    tag, timings = worker_image
    size_mb = image_size_mb(podman, tag)
    print(f"worker image {tag}: {size_mb:.0f} MB; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    assert size_mb < 1000, "the worker image grew past 1 GB: a build cache or the build stage reached it?"
    conf = tmp_path / "etc"
    secret_env = container_conf(conf, stack_tree, sshd, pg_tls)
    secret_values = [v for v in secret_env.values() if v] + [s.get_secret_value() for s in stack_config.secrets()]

    prefect = prefect_server
    assert pg_tls.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'",
                          "prefect") == [(1,)]  # the server keeps its state in PostgreSQL, not SQLite
    try:
        prefect.python("-m", "deployments.setup", extra_env=secret_env)
        prefect.cli("--no-prompt", "deploy", "--name", "backup/nightly-docker")
        prefect.start_worker("ops-docker", {"DOCKER_HOST": podman.base_url})
        out = prefect.cli("deployment", "run", "backup/nightly-docker", "--watch", "--watch-timeout", "480",
                          *docker_run_args(tag, conf), timeout=540)
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        run = prefect.http.get(f"{prefect.api}/flow_runs/{run_id}", timeout=10).json()
        assert run["state"]["type"] == "COMPLETED", run["state"]
        logs = prefect.http.post(f"{prefect.api}/logs/filter", timeout=10,
                             json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}).json()
        deployment = prefect.http.get(f"{prefect.api}/deployments/name/backup/nightly-docker", timeout=10).json()
    finally:
        prefect.stop_worker()

    manifest = published(stack_config)[-1]
    assert manifest.verified  # the container reached PostgreSQL, the droplet's Docker API over SSH, and S3

    [container] = docker_client.containers.list(all=True, filters={"label": f"io.prefect.flow-run-id={run_id}"})
    attrs = container.attrs
    assert attrs["Config"]["Image"].endswith(tag.rsplit("/", 1)[1]) and attrs["State"]["ExitCode"] == 0
    assert attrs["Config"]["User"] == "ops"
    assert podman.podman("run", "--rm", tag, "id", "-u").stdout.strip() != b"0"
    history = podman.podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout.decode()
    image = podman.podman("image", "inspect", tag).stdout.decode()
    env = "\n".join(attrs["Config"]["Env"])
    for where, text in (("flow-run container env", env), ("image history", history), ("image config", image),
                        ("deployment and its job variables", json.dumps(deployment)),
                        ("flow-run logs", json.dumps(logs))):
        leaked = [v[:3] + "…" for v in secret_values if v in text]
        assert not leaked, f"secret value(s) {leaked} in the {where}"
    assert f"STACK_OPS_FILE={CONF}/stack.yaml" in env


def test_debian_mirror_is_read_from_either_sources_format():
    from odoo_stack_ops.sandbox.worker_image import debian_mirror

    deb822 = ("Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
              "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n")
    assert debian_mirror(deb822) == "http://mirror.example/debian"
    assert debian_mirror("deb [arch=amd64] https://m.example/debian/ bookworm main\n") == "https://m.example/debian/"
    assert debian_mirror("deb https://packages.cloud.google.com/apt cloud-sdk main\n") == "http://deb.debian.org/debian"


def test_image_cache_key_follows_the_build_context_not_caches(tmp_path):
    """A changed source file rebuilds the worker image; a stray __pycache__ does not."""
    from odoo_stack_ops.sandbox.worker_image import CONTEXT, context_hash

    for name in CONTEXT:
        if name in {"odoo_stack_ops", "flows", "tasks", "deployments"}:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text(name)
    (tmp_path / "flows" / "backup.py").write_text("v1")
    first = context_hash(tmp_path)
    (tmp_path / "flows" / "__pycache__").mkdir()
    (tmp_path / "flows" / "__pycache__" / "backup.cpython-311.pyc").write_bytes(b"\0")
    assert context_hash(tmp_path) == first
    (tmp_path / "flows" / "backup.py").write_text("v2")
    assert context_hash(tmp_path) != first
