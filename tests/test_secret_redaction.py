"""Config redaction by allow-list, the token-shape scanner and the outgoing-diff scanner: pure functions over
text, tested directly. Every planted secret is made at run time (tests/planted.py)."""

from __future__ import annotations

import pytest

from odoo_stack_ops import config_backup as cb
from odoo_stack_ops.gitops import Finding, scan_outgoing
from odoo_stack_ops.redact import token_shapes
from tests import planted

KEY = b"k" * 32


def redacted(files: dict[str, str], known: tuple[str, ...] = ()) -> dict[str, str]:
    return {rel: cb.redact_file(rel, text, KEY, known) for rel, text in files.items()}


def test_every_planted_secret_shape_is_marked_and_harmless_settings_stay_readable():
    p = planted.plant()
    assert len(p.values) >= 15
    out = redacted(p.files)
    text = "\n".join(out.values())
    assert [what for what, value in p.values.items() if value in text] == []
    assert not token_shapes(text) and "BEGIN PRIVATE KEY" not in text
    for readable in ("TZ: Asia/Singapore", "- TZ=UTC", "GENERIC_TIMEZONE: Asia/Singapore", "DB_HOST: ${DB_HOST}",
                     "TZ=Asia/Singapore", "DB_PORT=25060", "db_port = 25060", "db_host = db.example",
                     "list_db = False", "proxy_pass http://odoo-core:8069;", "image: odoo:18.0", "--proxy-mode",
                     "- odoo-web-data:/var/lib/odoo", "postgresql://odoo:<redacted:", "@db.example/odoo"):
        assert readable in text, readable
    assert out["nginx/.htpasswd"].startswith("admin:<redacted:")
    assert redacted(out) == out  # marks are stable: a second pass changes nothing


@pytest.mark.parametrize(("line", "kept"), [
    ("TZ=Asia/Singapore", True), ("NODE_ENV=production", True), ("DB_PORT=25060", True),
    ("WEBHOOK_URL=https://n8n.example.com/", True), ("FLAG=true", True), ("EMPTY=", True), ("REF=${DB_HOST}", True),
    ("WEBHOOK_URL=https://ops:pw-1234@n8n.example.com/", False), ("WEBHOOK_URL=https://n8n.example/?token=x1", False),
    ("DB_HOST=db.example", False), ("PIN=123456", False), ("REF=${DB_PASSWORD:-fallback-pw}", False),
    ("MM_SQLSETTINGS_DATASOURCE=postgres://mmuser:pw-77@db/mm", False), ("TZ=Asia/Singapore with spaces", False),
])
def test_env_values_are_kept_only_for_plain_allow_listed_settings(line, kept):
    name, _, value = line.partition("=")
    out = cb.redact_env(line + "\n", KEY)
    assert (out == line + "\n") is kept
    if not kept:
        assert out == f"{name}={cb.fingerprint(value, KEY)}\n"


def test_compose_environment_in_every_form_is_allow_listed():
    compose = """services:
  a:
    environment:
      TZ: Asia/Singapore
      ANY_NAME: value-001
      MULTI: "first-002
        second-003"
      PLAIN:
        next-line-004
      <<: *common
  b:
    environment:
    - PLAIN_LIST=value-005
    - PASSTHROUGH
    - NODE_ENV=production
  c:
    environment: &env {A: value-006, "B": 'value-007', N8N_PORT: 5678,
      C: value-008}
  d:
    environment: [X=value-009, "Y=value-010", TZ=UTC]
  e:
    build:
      args:
        NPM_AUTH: value-011
    labels:
      - "traefik.http.middlewares.auth.basicauth.users=admin:$$apr1$$abcdefgh$$value012"
    secrets: [db_password]
x-api-keys:
  - value-013
x-credentials:
  nested_password: value-014
secrets:
  db_password:
    file: ./db_password.txt
"""
    out = cb.redact_compose(compose, KEY)
    assert [f"value-{n:03d}" for n in range(1, 12) if f"value-{n:03d}" in out] == [] and "value012" not in out
    assert "value-013" not in out and "value-014" not in out and "x-credentials:\n  nested_password: <redacted:" in out
    for readable in ("TZ: Asia/Singapore", "<<: *common", "- PASSTHROUGH", "- NODE_ENV=production", "N8N_PORT: 5678",
                     "TZ=UTC", "environment: &env {", "secrets: [db_password]", "file: ./db_password.txt"):
        assert readable in out, readable
    assert cb.redact_compose(out, KEY) == out


def test_a_rotated_secret_changes_only_its_own_line():
    p = planted.plant()
    before = redacted(p.files)[".env"]
    value = p.values[".env quoted value"]
    after = redacted({".env": p.files[".env"].replace(value, value + "x")})[".env"]
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("DB_PASSWORD=<redacted:")


def test_configured_secret_values_are_marked_in_any_file():
    value = planted.pw("configured")
    text = f"server {{ set $upstream_secret_note {value}; }}\n"
    assert value in cb.redact_file("nginx/x.conf", text, KEY)  # nothing about the line says "secret value"
    assert value not in cb.redact_file("nginx/x.conf", text, KEY, known=(value,))


@pytest.mark.parametrize(("kind", "make"), [
    ("private key", planted.pem_private_key), ("age secret key", planted.age_secret_key),
    ("AWS access key", planted.aws_access_key), ("DigitalOcean Spaces key", planted.spaces_key),
    ("DigitalOcean token", planted.do_token), ("GitHub token", planted.github_token),
    ("GitLab token", lambda: "glpat-" + planted.pw("x")[:8] + "abcdefghijklmnop"),
    ("Slack token", lambda: "xoxb" + "-1234567890-abcdefghij"), ("JWT", planted.jwt_service_role),
])
def test_token_shapes_are_found(kind, make):
    assert kind in {k for k, _, _ in token_shapes(f"before {make()} after")}


@pytest.mark.parametrize("text", [
    "DOCKER_COMPOSE_VERSION=2", "DO_NOT_TRACK_ANY_OF_IT", "nextCursor: eyJsaW1pdCI6MSwib2Zmc2V0IjoxfQ==",
    "AKIA1234", "image: mattermost/mattermost-team-edition", "-----BEGIN CERTIFICATE-----", "glpat-short",
])
def test_ordinary_text_is_not_a_token_shape(text):
    assert token_shapes(text) == []


def outgoing_log(*commits: tuple[str, str, str]) -> str:
    """Text in the format Repo.outgoing asks git for: (sha, message, diff) per commit."""
    return "".join(f"\x1e{sha}\n{message}\n\x1f\n\n{diff}" for sha, message, diff in commits)


def test_outgoing_scan_names_file_and_line_never_the_value():
    secret, github = planted.pw("configured"), planted.github_token()
    diff = f"""diff --git a/stack/.env b/stack/.env
index 1111111..2222222 100644
--- a/stack/.env
+++ b/stack/.env
@@ -1,3 +1,4 @@
 # Database
-DB_PASSWORD=<redacted:aaaaaaaaaaaa>
+DB_PASSWORD={secret}
 TZ=UTC
+++also an added line
@@ -10,2 +11,2 @@
 context
-removed {github}
+GIT_TOKEN={github}
diff --git a/new file.txt b/new file.txt
new file mode 100644
--- /dev/null
+++ b/new file.txt
@@ -0,0 +1,2 @@
+harmless
+{planted.pem_private_key().splitlines()[0]}
"""
    log = outgoing_log(("a" * 40, f"config files: changed .env\n\nmentions {secret}", diff),
                       ("b" * 40, "clean commit", "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"))
    findings = scan_outgoing(log, {secret, "unused-value"})
    assert findings == [Finding(f"commit {'a' * 12} message", 3, "configured secret value"),
                        Finding("stack/.env", 2, "configured secret value"),
                        Finding("stack/.env", 12, "GitHub token"), Finding("new file.txt", 2, "private key")]
    report = "; ".join(map(str, findings))
    assert secret not in report and github not in report and "stack/.env line 2 (configured secret value)" in report
    assert scan_outgoing(log.replace(secret, "<redacted:bbbbbbbbbbbb>").replace(github, "x"), {secret}) == [
        Finding("new file.txt", 2, "private key")]


def test_a_multi_line_configured_secret_is_found_by_its_lines():
    pem = planted.pem_private_key()
    body = planted.pem_body(pem)
    diff = f"diff --git a/k b/k\n--- /dev/null\n+++ b/k\n@@ -0,0 +1 @@\n+KEY_BODY={body}\n"
    assert scan_outgoing(outgoing_log(("c" * 40, "m", diff)), {pem}) == [Finding("k", 1, "configured secret value")]


def test_pem_blocks_are_marked_whole_even_escaped_or_cut_short_and_certificates_stay():
    pem = planted.pem_private_key()
    escaped = pem.replace("\n", "\\n")
    cut = pem.rsplit("\n", 1)[0]
    cert = "-----BEGIN CERTIFICATE-----\nMIIBcertificatebody\n-----END CERTIFICATE-----"
    text = f'x-cfg:\n  note: "{escaped}"\n# pasted\n{cut}\nserver {{ listen 80; }}\n{cert}\n'
    out = cb.redact_text(text, KEY)
    assert planted.pem_body(pem) not in out and "PRIVATE KEY" not in out
    assert "server { listen 80; }" in out and cert in out
