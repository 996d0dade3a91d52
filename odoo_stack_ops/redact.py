"""Secret redaction for everything we log or publish.

Every secret value the configuration loads is registered here; log records are redacted at creation
(a record factory, so Prefect's API handler only ever sees the masked text; an exception attached to a record
is masked too, so tracebacks are) and artifacts pass through `redact()` before they are published.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_MIN_LEN = 4  # shorter "secrets" would mask ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register(value: object) -> None:
    """Remember a secret value (str or pydantic SecretStr) so it is masked wherever it would appear."""
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if isinstance(raw, str) and len(raw) >= _MIN_LEN:
        with _lock:
            _secrets.add(raw)
    _install_record_factory()


def registered() -> frozenset[str]:
    """The registered secret values (for the tests' leak guard)."""
    with _lock:
        return frozenset(_secrets)


def redact(text: str) -> str:
    """Return `text` with every registered secret replaced by ***, longest first."""
    if not text or not _secrets:
        return text
    with _lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_exception(exc: BaseException | None) -> None:
    """Redact, in place, the string arguments of an exception and of every cause/context chained to it, so its
    str(), its traceback and whatever stores it (Prefect's Failed state and result) show *** for secrets."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        try:
            args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
            if args != current.args:
                current.args = args
            notes = getattr(current, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [redact(n) if isinstance(n, str) else n for n in notes]
        except Exception:  # noqa: BLE001, S110 - an exception that refuses new args keeps its own; logs still mask
            pass
        stack += [current.__cause__, current.__context__]


def _install_record_factory() -> None:
    global _installed  # noqa: PLW0603 - the factory is process-wide by nature
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets and record.exc_info and record.exc_info[1] is not None:
            mask_exception(record.exc_info[1])  # the traceback's last lines quote the exception's message
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a broken format string must not break logging
                return record
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


# Well-known shapes of credentials, found wherever they appear (the config backup marks them, the push guard
# refuses them). Each is specific enough that a match in config or workflow text is almost surely a real secret.
TOKEN_SHAPES: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "age secret key": re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{20,}"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    "DigitalOcean Spaces key": re.compile(r"\bDO(?=[A-Z]*[0-9])[0-9A-Z]{18}\b"),
    "DigitalOcean token": re.compile(r"\bdo[por]_v1_[0-9a-f]{64}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "GitLab token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    "Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
}


def token_shapes(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every well-known credential shape in `text`, in order of position (pure)."""
    found = [(kind, m.start(), m.end()) for kind, pattern in TOKEN_SHAPES.items() for m in pattern.finditer(text)]
    return sorted(found, key=lambda hit: (hit[1], -hit[2]))
