"""The stack's config files (docker-compose.yml, config/odoo.conf, nginx, .env) read from the droplet with
secret values redacted, as files for git.

Redaction is by allow-list where values are free-form: every value in `.env` and in compose `environment`/`args`
is marked unless its key is one of a few harmless settings (HARMLESS_KEYS) and the value looks plain. Everywhere
else the shapes that carry secrets are marked: password/secret/token/key options of odoo.conf, URL credentials,
`--*password*` arguments, Authorization headers, htpasswd hashes, PEM private keys, well-known token shapes and
every configured secret value. The push guard in gitops is the last line behind all of this.

A redacted value is written as `<redacted:xxxxxxxxxxxx>`: a keyed fingerprint (HMAC-SHA256 with a key that
stays on the worker), so a changed password still shows up as a changed line, while the repository holds nothing
that reveals or lets anyone brute-force the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from odoo_stack_ops import redact
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.executors.base import Executor
from odoo_stack_ops.redact import token_shapes
from odoo_stack_ops.streams import tar_files

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
FIXED_FILES = (*COMPOSE_FILES, "config/odoo.conf", ".env", "nginx.conf")
NGINX_DIRS = ("nginx", "config/nginx", "conf.d")
MAX_FILE_BYTES = 1 << 20
REPO_PREFIX = "stack/"
SECRET_NAME = re.compile(r"pass|secret|token|key|pwd|credential|auth|private|dsn|api_?key", re.IGNORECASE)
# The only settings whose values stay readable in .env and in compose `environment`/`args`; every other value
# there is fingerprinted. Short on purpose: a value is kept only when it also looks plain (no '@', '?', '=',
# spaces or line breaks), so credentials smuggled into one of these still never reach git.
HARMLESS_KEYS = frozenset({"TZ", "GENERIC_TIMEZONE", "PGPORT", "DB_PORT", "SMTP_PORT", "N8N_PORT", "N8N_PROTOCOL",
                           "N8N_HOST", "NODE_ENV", "WEBHOOK_URL", "LANG", "LC_ALL"})
ENV_SECTIONS = ("environment", "args")
HTPASSWD_NAMES = ("htpasswd", ".htpasswd", "htdigest", ".htdigest")
_REDACTED = re.compile(r"^<redacted:[0-9a-f]{12}>$")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:/+-]{0,200}")
_REFERENCE = re.compile(r"\$(?:\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)|\*[\w.-]+")  # ${VAR}, $VAR, a YAML alias
_CONSTANTS = frozenset({"", "true", "false", "yes", "no", "on", "off", "null", "~"})
_ENV_LINE = re.compile(r"^(?P<name>\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*)=(?P<value>.*)$")
_BARE_NAME = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*\s*$")
_YAML_ENTRY = re.compile(r"^(?P<lead>\s*(?:-\s+)?)(?P<q>[\"']?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q)"
                         r"\s*:(?:\s+|$)(?P<value>.*)$")
_LIST_ASSIGN = re.compile(r"^(?P<lead>\s*-\s+(?P<q>[\"']?))(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.*)$")
_SECTION = re.compile(r"^(?P<lead>\s*(?:-\s+)?(?P<name>[\w.-]+)\s*:)(?P<rest>\s*.*)$")
_KEEP_IN_SECTION = re.compile(r"^(?:-\s+)?(?:<<\s*:\s*)?\*[\w.-]+$")  # `<<: *common-env`, `- *alias`
_INI_OPTION = re.compile(r"^(?P<name>[^=:\s;#\[][^=:]*?)\s*[=:]\s*(?P<value>.*)$")
_PEM = re.compile(r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----.*?-----END (?P=label)-----", re.DOTALL)
_PEM_UNTERMINATED = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"  # and its base64 lines, if cut short
                               r"(?:(?:\\n|\n)[ \t]*[A-Za-z0-9+/=]+(?=\\n|\n|\Z|[\"']))*")
_URL_CREDENTIALS = re.compile(r"(?P<lead>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]*:)(?P<value>[^\s/@'\"]+)(?=@)")
_SENSITIVE_WORD = r"[\w-]*(?:passw(?:or)?d|secret|token|api[-_]?key|private[-_]?key|access[-_]?key)[\w-]*"
_QUOTED_OR_WORD = r"\"[^\"\n]*\"|'[^'\n]*'|(?!-)[^\s\"',\]}]+"
# --db_password=x, --db_password x, ["--db_password", "x"], and a block list's `- --db_password` / `- x`
_PASSWORD_ARG = re.compile(rf"(?P<lead>(?<![\w-])--{_SENSITIVE_WORD}"
                           rf"(?:=|[\"']?\s*,\s*[\"']?|[\"']?[ \t]*\n\s*-\s+[\"']?|[ \t]+))"
                           rf"(?P<value>{_QUOTED_OR_WORD})", re.IGNORECASE)
_INLINE_ASSIGN = re.compile(rf"(?P<lead>(?<![\w-]){_SENSITIVE_WORD}=)(?P<value>{_QUOTED_OR_WORD})", re.IGNORECASE)
_HEADER_DIRECTIVE = re.compile(
    r"(?P<lead>\b(?:proxy_set_header|add_header|more_set_headers|more_set_input_headers|grpc_set_header|add_trailer)"
    r"\s+[\"']?[\w-]*(?:authorization|api-?key|token|secret|cookie)[\w-]*[\"']?\s+)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^;\s]+(?:[ \t]+[^;\s]+)*)", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"(?P<lead>authorization[\"']?\s*[:=]?\s*[\"']?(?:basic|bearer|token|digest)\s+)"
                          r"(?P<value>[^\s\"';,]+)", re.IGNORECASE)
_PASSWORD_HASH = re.compile(r"\$\$?(?:apr1|2[aby]|[156y])\$\$?[./A-Za-z0-9$]{8,}|\{S?SHA\}[A-Za-z0-9+/=]{20,}")
_FLOW_PAIR = re.compile(r"^(?P<name>\"[^\"]*\"|'[^']*'|[^:\s][^:]*?)\s*:(?:\s+(?P<value>.*)|$)", re.DOTALL)
_PUBLIC_PEM = ("CERTIFICATE", "PUBLIC KEY", "X509 CRL")


def fingerprint(value: str, key: bytes) -> str:
    """`<redacted:…>` for a value: equal values give equal marks, nothing about the value can be recovered."""
    return f"<redacted:{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:12]}>"


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _keep(name: str, value: str) -> bool:
    """True when a .env/environment value may stay readable: empty, a boolean, a `${VAR}` reference, already a
    mark, or a plain single-line value of an allow-listed setting (pure)."""
    plain = _unquote(value)
    if "\n" in value:
        return False
    if plain.lower() in _CONSTANTS or _REFERENCE.fullmatch(plain) or _REDACTED.match(plain):
        return True
    return name.upper() in HARMLESS_KEYS and bool(_PLAIN.fullmatch(plain)) and not token_shapes(plain)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _closed(value: str, quote: str) -> bool:
    """True when `value` (starting with `quote`) holds its closing quote."""
    i = 1
    while i < len(value):
        if value[i] == "\\" and quote == '"':
            i += 2
            continue
        if value[i] == quote:
            return True
        i += 1
    return False


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after line `start` and the lines that continue it (indented deeper than `indent`; blank lines
    inside the run included, trailing ones not)."""
    end, j = start + 1, start + 1
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
        if lines[j].strip():
            end = j + 1
        j += 1
    return end


def _value_end(lines: list[str], start: int, indent: int, first: str) -> int:
    """Index after the lines of a YAML value that starts as `first` on line `start`: its deeper-indented
    continuation, and for a quoted value every line until the closing quote."""
    end = _block_end(lines, start, indent)
    quote = first.strip()[:1]
    if quote in ("'", '"'):
        while not _closed("\n".join([first.strip(), *lines[start + 1:end]]), quote) and end < len(lines):
            end += 1
    return end


def redact_env(text: str, key: bytes) -> str:
    """.env: every value fingerprinted unless its key is a harmless setting (HARMLESS_KEYS); quoted values that
    span lines are one value; keys, `export`, comments and blank lines are kept (pure)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = _ENV_LINE.match(line)
        if not line.strip() or line.lstrip().startswith("#") or _BARE_NAME.match(line):
            out.append(line)
            continue
        if not m:  # not KEY=value: nothing here is known to be harmless
            out.append(fingerprint(line.strip(), key))
            continue
        value = m.group("value").strip()
        quote = value[:1] if value[:1] in ("'", '"') else ""
        while quote and not _closed(value, quote) and i < len(lines):
            value += "\n" + lines[i]
            i += 1
        out.append(f"{m.group('name')}={value if _keep(m.group('key'), value) else fingerprint(value, key)}")
    return "\n".join(out) + "\n"


def redact_ini(text: str, key: bytes) -> str:
    """odoo.conf: values of password/secret/token/key-like options (continuation lines included) fingerprinted;
    other options kept readable (pure)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line, end = lines[i], i + 1
        m = _INI_OPTION.match(line)
        if m and SECRET_NAME.search(m.group("name")):
            end = _block_end(lines, i, _indent(line))
            value = "\n".join([m.group("value"), *lines[i + 1:end]]).strip()
            if value and value.lower() not in ("false", "true", "none") and not _REDACTED.match(value):
                out.append(f"{m.group('name').rstrip()} = {fingerprint(value, key)}")
                i = end
                continue
        out.extend(lines[i:end])
        i = end
    return "\n".join(out) + "\n"


def redact_compose(text: str, key: bytes) -> str:
    """docker-compose: in `environment`/`args` (list, block map, flow map or list) every value fingerprinted
    unless harmless (HARMLESS_KEYS, `${VAR}` references, booleans), block scalars and multi-line values as one;
    elsewhere values of secret-like keys fingerprinted (pure)."""
    lines, out, i = text.splitlines(), [], 0
    section: int | None = None  # indentation of the `environment:` key whose entries we are in
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            i += 1
            continue
        if section is not None and (_indent(line) < section or (_indent(line) == section
                                                                 and not stripped.startswith("- "))):
            section = None
        if section is not None:
            i = _redact_entry(lines, i, key, out, allow_list=True)
            continue
        m = _SECTION.match(line)
        if m and m.group("name") in ENV_SECTIONS:
            rest = m.group("rest").strip()
            body = re.sub(r"^&[\w.-]+\s*", "", rest)
            if not body or body.startswith("#"):
                section = _indent(line)
                out.append(line)
                i += 1
            elif body[0] in "{[":
                end = i + 1
                while _flow_depth("\n".join([rest, *lines[i + 1:end]])) > 0 and end < len(lines):
                    end += 1
                flow = "\n".join([body, *lines[i + 1:end]])
                anchor = rest[:len(rest) - len(body)]
                out.append(f"{m.group('lead')} {anchor}{_redact_flow(flow, key)}")
                i = end
            else:
                out.append(line if _keep("", body) else f"{m.group('lead')} {fingerprint(body, key)}")
                i += 1
            continue
        i = _redact_entry(lines, i, key, out, allow_list=False)
    return "\n".join(out) + "\n"


def _redact_entry(lines: list[str], i: int, key: bytes, out: list[str], allow_list: bool) -> int:
    """Redact the YAML entry starting at line i into `out`; returns the index after it. With `allow_list` (an
    environment entry) every value not harmless is fingerprinted, otherwise only those of secret-like keys."""
    line = lines[i]
    assign = _LIST_ASSIGN.match(line)
    entry = None if assign else _YAML_ENTRY.match(line)
    m = assign or entry
    if m is None:
        if allow_list and not _KEEP_IN_SECTION.match(line.strip()) and not _BARE_NAME.match(line.lstrip("- ")):
            out.append(" " * _indent(line) + fingerprint(line.strip(), key))
        else:
            out.append(line)
        return i + 1
    name, first = m.group("key"), m.group("value")
    if not allow_list and (not SECRET_NAME.search(name) or name == "secrets"):  # compose's `secrets:` lists names
        out.append(line)
        return i + 1
    quote = m.group("q") if assign else ""
    end = _value_end(lines, i, _indent(line), quote + first if assign else first)
    more = lines[i + 1:end]
    if not allow_list and not first.strip() and more and (_YAML_ENTRY.match(more[0]) or _LIST_ASSIGN.match(more[0])):
        out.append(line)  # a mapping under a secret-like name, not a value: look at its entries
        return i + 1
    value = "\n".join([first, *more]).strip()
    if assign and quote:
        value = value.removesuffix(quote)
    if _keep(name if allow_list else "", value):
        out.extend(lines[i:end])
    elif assign:
        out.append(f"{m.group('lead')}{name}={fingerprint(value, key)}{quote}")
    else:
        q = m.group("q")
        out.append(f"{m.group('lead')}{q}{name}{q}: {fingerprint(value, key)}")
    return end


def _flow_depth(text: str) -> int:
    """Bracket depth left open at the end of a YAML flow collection (quotes respected)."""
    depth, quote = 0, ""
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
    return depth


def _split_flow(body: str) -> list[str]:
    """The top-level items of a flow collection's inside, split at commas outside quotes and brackets."""
    items, cur, quote, depth = [], "", "", 0
    for c in body:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'" and (not cur.strip() or re.search(r":\s*$", cur)):
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += c
    return [*items, cur]


def _redact_flow(flow: str, key: bytes) -> str:
    """`{A: x, B: y}` or `[A=x, "B=y"]` with every value not harmless fingerprinted, as one line (pure)."""
    close = "}" if flow.startswith("{") else "]"
    body = flow[1:flow.rfind(close)] if close in flow else flow[1:]
    items = []
    for raw in _split_flow(body):
        item = " ".join(raw.split()) if "\n" in raw else raw.strip()
        if not item:
            continue
        if close == "}":
            m = _FLOW_PAIR.match(item)
            if m and m.group("value") and not _keep(_unquote(m.group("name")), m.group("value")):
                item = f"{m.group('name')}: {fingerprint(m.group('value').strip(), key)}"
            elif not m and not _BARE_NAME.match(_unquote(item)):
                item = fingerprint(item, key)
        else:
            quote = item[0] if item[0] in "\"'" else ""
            name, eq, value = _unquote(item).partition("=")
            if eq and not _keep(name, value):
                item = f"{quote}{name}={fingerprint(value, key)}{quote}"
            elif not eq and not _keep("", item) and not _BARE_NAME.match(_unquote(item)):
                item = fingerprint(item, key)
        items.append(item)
    return ("{" if close == "}" else "[") + ", ".join(items) + close


def redact_htpasswd(text: str, key: bytes) -> str:
    """htpasswd/htdigest: the user names kept, everything after the first ':' (the hash) fingerprinted (pure)."""
    out = []
    for line in text.splitlines():
        user, sep, rest = line.partition(":")
        if not line.strip() or line.lstrip().startswith("#") or (sep and _REDACTED.match(rest)):
            out.append(line)
        else:
            out.append(f"{user}:{fingerprint(rest, key)}" if sep else fingerprint(line.strip(), key))
    return "\n".join(out) + "\n"


def redact_text(text: str, key: bytes, known: Iterable[str] = ()) -> str:
    """Any file: private-key PEM blocks, the `known` secret values, well-known token shapes, URL credentials,
    `--*password*` arguments, `*_PASSWORD=` assignments, Authorization headers and password hashes fingerprinted
    (pure)."""
    def mark(m: re.Match[str]) -> str:
        value = m.group("value") if "value" in m.re.groupindex else m.group(0)
        lead = m.group("lead") if "lead" in m.re.groupindex else ""
        if _REDACTED.match(_unquote(value)) or _REFERENCE.fullmatch(_unquote(value)):
            return m.group(0)
        quote = value[0] if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'" else ""
        return f"{lead}{quote}{fingerprint(value, key)}{quote}"

    text = _PEM.sub(lambda m: m.group(0) if m.group("label").endswith(_PUBLIC_PEM) else mark(m), text)
    text = _PEM_UNTERMINATED.sub(mark, text)
    for value in sorted(known, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, fingerprint(value, key))
    for _, start, end in reversed(_disjoint(token_shapes(text))):
        text = text[:start] + fingerprint(text[start:end], key) + text[end:]
    for pattern in (_URL_CREDENTIALS, _PASSWORD_ARG, _INLINE_ASSIGN, _HEADER_DIRECTIVE, _AUTH_SCHEME):
        text = pattern.sub(mark, text)
    return _PASSWORD_HASH.sub(mark, text)


def _disjoint(hits: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for hit in hits:
        if not out or hit[1] >= out[-1][2]:
            out.append(hit)
    return out


def redact_file(rel: str, text: str, key: bytes, known: Iterable[str] = ()) -> str:
    """The redaction that fits the file (by its path relative to the compose directory), then `redact_text`."""
    name = PurePosixPath(rel).name
    if name == ".env" or name.startswith(".env.") or name.endswith(".env"):
        text = redact_env(text, key)
    elif name == "odoo.conf" and not rel.startswith(NGINX_DIRS):
        text = redact_ini(text, key)
    elif name in COMPOSE_FILES:
        text = redact_compose(text, key)
    elif name in HTPASSWD_NAMES or name.endswith((".htpasswd", ".passwd")):
        text = redact_htpasswd(text, key)
    return redact_text(text, key, known)


def list_files(host: Executor, compose_dir: str) -> list[str]:
    """Paths (relative to compose_dir) of the files to back up; raises OpsError when the directory or its
    compose file is missing, so a wrong path never looks like 'every file was deleted'."""
    script = ('d=$1; shift; cd "$d" || { echo "missing directory $d" >&2; exit 3; }; '
              'for f in "$@"; do [ -f "$f" ] && echo "$f"; done; '
              'for d in ' + " ".join(NGINX_DIRS) + '; do [ -d "$d" ] && find "$d" -type f \\( -name "*.conf" '
              '-o -name "*htpasswd" -o -name "*htdigest" -o -name "*.passwd" \\); done; true')
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


def collect(host: Executor, compose_dir: str, key: bytes, known: Iterable[str] | None = None) -> dict[str, str]:
    """{repo path under stack/: redacted text} for every config file found under compose_dir; `known` secret
    values (default: every configured one) are marked wherever they appear."""
    rels = list_files(host, compose_dir)
    raw = read_files(host, compose_dir, rels)
    known = redact.registered() if known is None else known
    return {f"{REPO_PREFIX}{rel}": redact_file(rel, text, key, known) for rel, text in sorted(raw.items())}


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
