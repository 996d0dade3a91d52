"""Config files of the stack (docker-compose.yml, odoo.conf, nginx, .env) from the droplet, secrets redacted."""

from __future__ import annotations

import re

from odoo_stack_ops.executors.base import Executor

CANDIDATES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "config/odoo.conf", ".env")
SECRET_KEY = re.compile(r"(pass|secret|token|key|pwd)", re.IGNORECASE)


def redact_env(text: str) -> str:
    """KEY=value lines become KEY=*** (empty values stay empty); comments and keys are kept (pure)."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in line:
            out.append(line)
            continue
        key, _, value = line.partition("=")
        out.append(f"{key}={'***' if value.strip() else ''}")
    return "\n".join(out) + "\n"


def redact_ini(text: str) -> str:
    """odoo.conf: values of password/secret/key-like options become *** (pure)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and SECRET_KEY.search(key) and value.strip() and value.strip().lower() != "false":
            out.append(f"{key.rstrip()} = ***")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def collect(host: Executor, compose_dir: str) -> dict[str, str]:
    """{repo path: redacted text} for the files that exist under compose_dir (nginx: every *.conf)."""
    files: dict[str, str] = {}
    listing = host.run(["sh", "-c", 'cd "$1" 2>/dev/null || exit 0; '
                        'find nginx config/nginx -name "*.conf" -type f 2>/dev/null; true', "sh", compose_dir],
                       timeout=60).stdout_text.split()
    for rel in [*CANDIDATES, *sorted(listing)]:
        r = host.run(["cat", f"{compose_dir.rstrip('/')}/{rel}"], check=False, timeout=60)
        if not r.ok:
            continue
        text = r.stdout.decode("utf-8", "replace")
        if rel == ".env":
            text = redact_env(text)
        elif rel.endswith("odoo.conf"):
            text = redact_ini(text)
        files[f"stack/{rel}"] = text
    return files
