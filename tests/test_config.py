"""The one configuration model: the seed's stack loads; every error is reported at once; secrets never show."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from odoo_stack_ops.command import Command
from odoo_stack_ops.config import ENV_MAP, load_config
from odoo_stack_ops.errors import ConfigError
from odoo_stack_ops.redact import redact

EXAMPLE = Path(__file__).parent.parent / "stack.example.yaml"
SEED_ENV = {
    "DB_HOST": "odoo-db-sgp1-do-user-xxxxx.b.db.ondigitalocean.com", "DB_PORT": "25060", "DB_USER": "odoo",
    "DB_PASSWORD": "db-pass-Zq81!x", "DB_NAME": "odoo_core", "ODOO_ADMIN_PASSWORD": "admin-pass-77Qx",
    "ODOO_DATA_DIR": "/var/lib/odoo", "SMTP_HOST": "smtp.mailgun.org", "SMTP_PORT": "587",
    "SMTP_USER": "postmaster@mg.insightpulseai.com", "SUPABASE_URL": "https://spdtwktxdalcfigzeqrz.supabase.co",
    "SUPABASE_SERVICE_ROLE_KEY": "srk-eyJhbGciOi-secret", "N8N_ENCRYPTION_KEY": "n8n-enc-key-9981",
    "WEBHOOK_URL": "https://n8n.insightpulseai.com", "SPACES_ACCESS_KEY_ID": "DO00SPACESKEYID",
    "SPACES_SECRET_ACCESS_KEY": "spaces-secret-Kk2", "DIGITALOCEAN_TOKEN": "dop_v1_tokenvalue",
    "MATTERMOST_WEBHOOK_URL": "https://chat.example.com/hooks/abcdefsecret", "N8N_API_KEY": "n8n-api-key-1",
}
SECRET_VARS = ["DB_PASSWORD", "ODOO_ADMIN_PASSWORD", "SUPABASE_SERVICE_ROLE_KEY", "N8N_ENCRYPTION_KEY",
               "SPACES_SECRET_ACCESS_KEY", "DIGITALOCEAN_TOKEN", "MATTERMOST_WEBHOOK_URL", "N8N_API_KEY"]


def _example_without_blocks(tmp_path: Path) -> Path:
    """The example file with its Secret-block references removed (the environment supplies the secrets)."""
    lines = [ln for ln in EXAMPLE.read_text().splitlines() if "prefect-secret:" not in ln]
    p = tmp_path / "stack.yaml"
    p.write_text("\n".join(lines))
    return p


def test_seed_stack_loads_from_example_and_env(tmp_path):
    cfg = load_config(_example_without_blocks(tmp_path), env=SEED_ENV)
    assert cfg.ssh.host == "178.128.112.214" and cfg.ssh.strict_host_key_checking
    assert cfg.database.port == 25060 and cfg.database.sslmode == "verify-full" and cfg.database.pool_size == 25
    assert cfg.database.sslrootcert == Path("~/.postgresql/odoo-db-sgp1-ca.crt").expanduser()
    assert cfg.database.databases == ["odoo_core", "odoo_dev"]
    assert set(cfg.containers) == {"odoo-core", "nginx-proxy", "n8n", "mattermost"}
    assert cfg.containers["odoo-core"].image == "odoo:18.0" and cfg.containers["odoo-core"].ports == [8069]
    assert cfg.odoo.filestore_volume == "odoo-web-data" and cfg.odoo.data_dir == "/var/lib/odoo"
    assert cfg.spaces.region == "sgp1" and cfg.spaces.endpoint == "https://sgp1.digitaloceanspaces.com"
    assert cfg.backup.retention_days == 30 and cfg.backup.timezone == "Asia/Singapore"
    assert cfg.thresholds.cpu_percent == 80 and cfg.thresholds.disk_percent == 85
    assert cfg.database.password.get_secret_value() == SEED_ENV["DB_PASSWORD"]
    assert cfg.supabase.url == SEED_ENV["SUPABASE_URL"] and cfg.smtp.user == SEED_ENV["SMTP_USER"]


def test_every_seed_variable_is_mapped():
    seed = ["DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "ODOO_ADMIN_PASSWORD", "ODOO_DATA_DIR",
            "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "N8N_ENCRYPTION_KEY",
            "WEBHOOK_URL"]
    assert set(seed) <= set(ENV_MAP)


def test_no_secret_in_repr_str_or_dump(tmp_path):
    cfg = load_config(_example_without_blocks(tmp_path), env=SEED_ENV)
    shown = repr(cfg) + str(cfg) + cfg.model_dump_json()
    for var in SECRET_VARS:
        assert SEED_ENV[var] not in shown
        assert redact(f"x {SEED_ENV[var]} y") == "x *** y"


def test_secret_never_reaches_a_log_record(tmp_path, caplog):
    load_config(_example_without_blocks(tmp_path), env=SEED_ENV)
    with caplog.at_level(logging.INFO):
        logging.getLogger("odoo_stack_ops.test").info("connecting with %s", SEED_ENV["DB_PASSWORD"])
    assert SEED_ENV["DB_PASSWORD"] not in caplog.text and "***" in caplog.text


def test_all_errors_reported_at_once_without_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("database: {port: notaport, sslmode: maybe, name: 'odoo; drop'}\nssh: {port: 70000}\n"
                   "docker: {mode: tcp}\nunknown_key: 1\nbackup: {retention_days: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, env={"DB_PASSWORD": "hunter2-very-secret"})
    text = str(err.value)
    for field in ["database.host", "database.port", "database.sslmode", "database.name", "ssh.host", "ssh.port",
                  "docker.base_url", "unknown_key", "spaces", "backup.retention_days"]:
        assert field in text or field.split(".")[0] in text, field
    assert text.count("\n  - ") >= 9
    assert "hunter2-very-secret" not in text and "notaport" not in text


def test_dotenv_and_precedence(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nDB_HOST=from-dotenv\nDB_SSLROOTCERT=/etc/ca.crt\nDB_PASSWORD='quoted secret value'\nSPACES_BUCKET=b\n"
                        "export SSH_HOST=droplet\n")
    cfg = load_config(None, env={"DB_HOST": "from-env"}, dotenv=env_file)
    assert cfg.database.host == "from-env"
    assert cfg.database.password.get_secret_value() == "quoted secret value"
    assert cfg.ssh.host == "droplet"


def test_missing_stack_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"stack\.example\.yaml"):
        load_config(tmp_path / "nope.yaml", env={})


def test_secret_blocks_are_resolved(tmp_path, prefect_harness):
    from prefect.blocks.system import Secret

    Secret(value="from-a-block-771").save("test-db-password", overwrite=True)
    p = tmp_path / "s.yaml"
    p.write_text("database: {host: h, sslrootcert: /etc/ca.crt, password: 'prefect-secret:test-db-password'}\nspaces: {bucket: b}\n"
                 "docker: {mode: local, base_url: 'unix:///x.sock'}\n")
    cfg = load_config(p, env={})
    assert cfg.database.password.get_secret_value() == "from-a-block-771"
    assert "from-a-block-771" not in repr(cfg)


def test_secret_block_reference_needs_the_block(tmp_path, prefect_harness):
    p = tmp_path / "s.yaml"
    p.write_text("database: {host: h, sslrootcert: /etc/ca.crt, password: 'prefect-secret:definitely-missing-block'}\nspaces: {bucket: b}\n"
                 "docker: {mode: local, base_url: 'unix:///x.sock'}\n")
    with pytest.raises(ConfigError, match="definitely-missing-block"):
        load_config(p, env={})


def test_command_masks_secrets_and_refuses_shell_strings():
    cmd = Command.of(["psql", "-c", "select 1"], {"PGPASSWORD": SecretStr("pw-123456"), "PGHOST": "db"})
    assert "pw-123456" not in cmd.masked() and "PGPASSWORD=***" in cmd.masked() and "PGHOST=db" in cmd.masked()
    assert "pw-123456" not in repr(cmd)
    with pytest.raises(TypeError):
        Command.of("psql -c 'select 1'")
    with pytest.raises(ValueError):
        Command.of(["x"], {"BAD NAME": "1"})
    with pytest.raises(ValueError):
        Command.of(["x"], {"V": "two\nlines"})


def test_check_config_probes_every_endpoint(stack_file, stack_config, capsys):
    from odoo_stack_ops.cli import main

    code = main(["--stack-file", stack_file, "check-config"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"configuration valid: stack {stack_config.name}"
    assert lines[1].split() == ["component", "target", "status", "seconds", "detail"]
    rows = [line.split(None, 4) for line in lines[2:] if line.strip()]
    got = [(component, target, status) for component, target, status, _seconds, _detail in rows]
    # container rows come in the stack file's order (a YAML dump sorts keys): compare them as a sorted run
    first = next(i for i, row in enumerate(got) if row[0] == "container")
    count = sum(row[0] == "container" for row in got)
    got[first:first + count] = sorted(got[first:first + count])
    # Every endpoint of the sandbox is up (n8n and mattermost are stand-in containers); supabase is not configured.
    expected = [("ssh", f"{stack_config.ssh.user}@{stack_config.ssh.host}:{stack_config.ssh.port}", "ok"),
                ("docker", stack_config.docker.mode, "ok"),
                *[("container", service, "ok") for service in sorted(stack_config.containers)],
                ("database", f"{stack_config.database.host}:{stack_config.database.port}", "ok"),
                ("spaces", f"{stack_config.spaces.endpoint}/{stack_config.spaces.bucket}", "ok"),
                ("odoo", stack_config.odoo.health_url, "ok"),
                ("n8n", stack_config.n8n.url, "ok"),
                ("supabase", "-", "-"),
                ("mattermost", "webhook", "ok")]
    assert got == expected, out
    detail = {component: d for component, _target, _status, _seconds, d in rows}
    assert detail["database"].endswith(f"TLS on, server verified against {stack_config.database.sslrootcert}")
    assert detail["spaces"] == "bucket reachable, credentials accepted" and detail["odoo"] == "HTTP 200"
    assert detail["supabase"] == "not configured"
    assert code == 0


def test_check_config_fails_the_spaces_row_on_a_wrong_secret(stack_tree, tmp_path, capsys):
    """The test bed's S3 checks signatures as Spaces does, so a wrong secret shows on the Spaces row."""
    import yaml

    from odoo_stack_ops.cli import main

    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump({**stack_tree, "spaces": {**stack_tree["spaces"],
                                                              "secret_access_key": "not-the-issued-secret"}}))
    code = main(["--stack-file", str(path), "check-config"])
    rows = {row[0]: row for row in (line.split(None, 4) for line in capsys.readouterr().out.splitlines()[2:])
            if row}
    assert rows["spaces"][2] == "FAIL", rows["spaces"]
    assert "AccessDenied" in rows["spaces"][4] and "SPACES_SECRET_ACCESS_KEY is wrong" in rows["spaces"][4]
    assert rows["database"][2] == "ok" and rows["odoo"][2] == "ok"
    assert code == 1
