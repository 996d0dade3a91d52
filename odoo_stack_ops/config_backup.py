"""The stack's config files (docker-compose.yml, config/odoo.conf, nginx, .env) read from the droplet with
secret values redacted, as files for git.

A redacted value is written as `<redacted:xxxxxxxxxxxx>`: a keyed fingerprint (HMAC-SHA256 with a key that
stays on the worker), so a changed password still shows up as a changed line, while the repository holds nothing
that reveals or lets anyone brute-force the value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path, PurePosixPath

from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.streams import tar_files

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
FIXED_FILES = (*COMPOSE_FILES, "config/odoo.conf", ".env", "nginx.conf")
NGINX_DIRS = ("nginx", "config/nginx", "conf.d")
MAX_FILE_BYTES = 1 << 20
REPO_PREFIX = "stack/"
SECRET_NAME = re.compile(r"pass|secret|token|key|pwd|credential|auth|private|dsn|api_?key", re.IGNORECASE)
_COMPOSE_ENV = re.compile(r"^(?P<lead>\s*-?\s*[\"']?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*[:=]\s*)(?P<value>.*)$")
_REDACTED = re.compile(r"^<redacted:[0-9a-f]{12}>$")


def fingerprint(value: str, key: bytes) -> str:
    """`<redacted:…>` for a value: equal values give equal marks, nothing about the value can be recovered."""
    return f"<redacted:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:12]}>"


def redact_env(text: str, key: bytes) -> str:
    """.env: every value redacted (the keys, comments and blank lines kept), `export KEY=` kept as such (pure)."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in line:
            out.append(line)
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        out.append(f"{name}={fingerprint(value, key) if value else ''}")
    return "\n".join(out) + "\n"


def redact_ini(text: str, key: bytes) -> str:
    """odoo.conf: values of password/secret/key-like options redacted; other options kept readable (pure)."""
    out = []
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        value = value.strip()
        if sep and not line.lstrip().startswith((";", "#")) and SECRET_NAME.search(name) and value \
                and value.lower() not in ("false", "true", "none"):
            out.append(f"{name.rstrip()} = {fingerprint(value, key)}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def redact_compose(text: str, key: bytes) -> str:
    """docker-compose: inline values of secret-like variables (`DB_PASSWORD: x`, `- "DB_PASSWORD=x"`) redacted;
    `${VAR}` references, which hold no secret, and booleans are kept (pure)."""
    out = []
    for line in text.splitlines():
        m = _COMPOSE_ENV.match(line)
        quote = m.group("lead").strip().lstrip("-").strip() if m else ""
        value = m.group("value").strip().removesuffix(quote) if m else ""
        if m and value and SECRET_NAME.search(m.group("key")) and not _harmless(value):
            out.append(f"{m.group('lead')}{m.group('key')}{m.group('sep')}{fingerprint(value, key)}{quote}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _harmless(value: str) -> bool:
    plain = value.strip("\"'")
    return (plain.startswith(("${", "$$")) or value.startswith(("|", ">", "&", "*")) or bool(_REDACTED.match(value))
            or plain.lower() in ("true", "false", "yes", "no", "null", ""))


def redact_file(rel: str, text: str, key: bytes) -> str:
    """The redaction that fits the file (by its path relative to the compose directory)."""
    name = PurePosixPath(rel).name
    if name == ".env" or name.startswith(".env."):
        return redact_env(text, key)
    if name == "odoo.conf":
        return redact_ini(text, key)
    if name in COMPOSE_FILES:
        return redact_compose(text, key)
    return text


def fingerprint_key(path: Path) -> bytes:
    """The worker's fingerprint key (created once, mode 0600). Losing it only makes one commit re-mark every
    redacted value."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even briefly
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def list_files(host: Executor, compose_dir: str) -> list[str]:
    """Paths (relative to compose_dir) of the files to back up; raises OpsError when the directory or its
    compose file is missing, so a wrong path never looks like 'every file was deleted'."""
    script = ('d=$1; shift; cd "$d" || { echo "missing directory $d" >&2; exit 3; }; '
              'for f in "$@"; do [ -f "$f" ] && echo "$f"; done; '
              'for d in ' + " ".join(NGINX_DIRS) + '; do [ -d "$d" ] && find "$d" -type f -name "*.conf"; done; true')
    r = host.run(["sh", "-c", script, "sh", compose_dir, *FIXED_FILES], timeout=60, check=False)
    if r.exit_code == 3:
        raise OpsError(f"compose directory {compose_dir} not found on {host.where}: set odoo.compose_dir")
    r.check("cannot list the config files")
    files = sorted({line.strip().removeprefix("./") for line in r.stdout_text.splitlines() if line.strip()})
    if not any(f in COMPOSE_FILES for f in files):
        raise OpsError(f"no docker-compose.yml in {compose_dir} on {host.where}: is odoo.compose_dir right?")
    return files


def read_files(host: Executor, compose_dir: str, rels: list[str]) -> dict[str, str]:
    """{relative path: text} of `rels`, read as one tar stream (one round trip over SSH)."""
    out: dict[str, str] = {}
    with host.stream(["tar", "-cf", "-", "-C", compose_dir, "--", *rels], timeout=120) as stream:
        for member, fh in tar_files(stream):
            if member.size > MAX_FILE_BYTES:
                raise OpsError(f"{member.name} in {compose_dir} is {member.size} bytes: too large for a config file")
            out[member.name.removeprefix("./")] = fh.read().decode("utf-8", "replace")
    return out


def collect(host: Executor, compose_dir: str, key: bytes) -> dict[str, str]:
    """{repo path under stack/: redacted text} for every config file found under compose_dir."""
    rels = list_files(host, compose_dir)
    raw = read_files(host, compose_dir, rels)
    return {f"{REPO_PREFIX}{rel}": redact_file(rel, text, key) for rel, text in sorted(raw.items())}


def change_message(old: dict[str, str], new: dict[str, str]) -> tuple[list[str], str]:
    """(changed paths, commit message) between two file sets under stack/ (pure)."""
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    parts = []
    for kind, paths in (("added", [p for p in changed if p not in old]),
                        ("changed", [p for p in changed if p in old and p in new]),
                        ("removed", [p for p in changed if p not in new])):
        if paths:
            parts.append(f"{kind} " + ", ".join(p.removeprefix(REPO_PREFIX) for p in paths))
    message = "config files: " + "; ".join(parts) + "\n" if parts else ""
    return changed, message
