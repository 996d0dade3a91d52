"""Secrets planted in a compose directory for the redaction and push-guard tests, every one made at run time
(random, so no credential-shaped text is ever committed here, and a hit can only come from the planting)."""

from __future__ import annotations

import base64
import json
import secrets
import string
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

_BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
_UPPER = string.ascii_uppercase + string.digits


def _pick(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def pem_private_key() -> str:
    """A fresh Ed25519 private key as PKCS#8 PEM (three lines)."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode().strip()


def pem_body(pem: str) -> str:
    """The base64 line of a PEM block: the part that must never reach git."""
    return pem.splitlines()[1]


def age_secret_key() -> str:
    return "AGE-SECRET-KEY-1" + _pick(_BECH32, 58)


def jwt_service_role() -> str:
    """A Supabase-style service role key: base64url(header).base64url(claims).signature."""
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return ".".join([b64({"alg": "HS256", "typ": "JWT"}), b64({"role": "service_role", "ref": secrets.token_hex(8)}),
                     secrets.token_urlsafe(32)])


def github_token() -> str:
    return "ghp" + "_" + _pick(string.ascii_letters + string.digits, 36)


def aws_access_key() -> str:
    return "AKIA" + _pick(_UPPER, 16)


def spaces_key() -> str:
    return "DO00" + _pick(_UPPER, 16)


def do_token() -> str:
    return "dop" + "_v1_" + secrets.token_hex(32)


def pw(label: str) -> str:
    """A password-like value whose origin shows in a failure message."""
    return f"{label}-{secrets.token_urlsafe(9)}"


@dataclass
class Planted:
    """One compose directory's worth of planted secrets: {description: value} and the files holding them."""

    values: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def add(self, what: str, value: str) -> str:
        self.values[what] = value
        return value


def plant() -> Planted:
    """The files of a compose directory with more than 15 secret shapes planted, plus harmless settings."""
    p = Planted()
    pem_yaml, pem_env = pem_private_key(), pem_private_key()
    p.add("PEM in a YAML block scalar", pem_body(pem_yaml))
    p.add("PEM in a quoted multi-line .env value", pem_body(pem_env))
    indented = "\n".join("        " + line for line in pem_yaml.splitlines())
    p.files["docker-compose.yml"] = f"""services:
  odoo-core:
    image: odoo:18.0
    env_file: .env
    command: odoo --db_password={p.add("--db_password=x", pw("cmd-eq"))} --proxy-mode
    environment:
      DB_HOST: ${{DB_HOST}}
      TZ: Asia/Singapore
      DB_PASSWORD: "{p.add("compose block map, quoted", pw("compose-map"))}"
      SSH_PRIVATE_KEY: |
{indented}
      NOTE: >
        {p.add("folded block scalar", pw("folded"))}
    volumes:
      - odoo-web-data:/var/lib/odoo
  odoo-cron:
    image: odoo:18.0
    command: ["odoo", "--db_password", "{p.add("--db_password x (flow list)", pw("cmd-list"))}"]
    entrypoint: odoo --smtp_password {p.add("--smtp_password x", pw("cmd-space"))}
  mattermost:
    image: mattermost/mattermost-team-edition
    environment:
      - MM_SQLSETTINGS_DATASOURCE=postgres://mmuser:{p.add("URL credentials in a list env", pw("mm"))}@db/mm
      - "MM_FILESETTINGS_PUBLICLINKSALT={p.add("YAML list env, quoted", pw("salt"))}"
      - TZ=UTC
  n8n:
    image: n8nio/n8n
    environment: {{DB_POSTGRESDB_PASSWORD: {p.add("flow-style map", pw("flow"))}, GENERIC_TIMEZONE: Asia/Singapore}}
  supabase-sync:
    image: alpine
    environment:
      SERVICE_KEY: {p.add("JWT service role key", jwt_service_role())}
      SPACES_KEY: {p.add("DO Spaces key", spaces_key())}
      DO_TOKEN: {p.add("dop_v1 token", do_token())}
    healthcheck:
      test: ["CMD", "curl", "-H", "Authorization: Bearer {p.add("Bearer in a healthcheck", pw("hc"))}", "http://x"]
"""
    p.files[".env"] = f"""# Database
DB_HOST=db.example
DB_PORT=25060
TZ=Asia/Singapore
DB_PASSWORD="{p.add(".env quoted value", pw("env-quoted"))}"
export GIT_TOKEN={p.add("export KEY=... (GitHub token)", github_token())}
BACKUP_AGE_IDENTITY={p.add("age secret key", age_secret_key())}
AWS_ACCESS_KEY_ID={p.add("AWS key", aws_access_key())}
TLS_KEY="{pem_env}"
ODOO_ADMIN_PASSWORD='{p.add(".env single-quoted", pw("env-single"))}'
"""
    p.files["config/odoo.conf"] = f"""[options]
admin_passwd = {p.add("odoo.conf admin_passwd", pw("admin"))}
db_host = db.example
db_port = 25060
db_password = {p.add("odoo.conf db_password", pw("dbpw"))}
smtp_password = {p.add("odoo.conf smtp_password", pw("smtp"))}
db_uri = postgresql://odoo:{p.add("URL credentials in odoo.conf", pw("uri"))}@db.example/odoo
list_db = False
"""
    basic = base64.b64encode(f"admin:{pw('basic')}".encode()).decode()
    p.files["nginx/conf.d/odoo.conf"] = f"""server {{
  listen 80;
  location / {{
    proxy_set_header Authorization "Basic {p.add("Authorization Basic header", basic)}";
    proxy_pass http://odoo-core:8069;
  }}
  location /hooks/ {{
    add_header Authorization "Bearer {p.add("Authorization Bearer header", pw("bearer"))}";
    proxy_pass http://ops:{p.add("URL credentials in nginx", pw("nginx-url"))}@n8n:5678;
  }}
}}
"""
    apr1 = "$apr1$" + _pick(string.ascii_letters, 8) + "$" + _pick(string.ascii_letters + string.digits, 22)
    p.files["nginx/.htpasswd"] = f"admin:{p.add('htpasswd apr1 hash', apr1)}\n"
    return p
