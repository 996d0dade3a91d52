"""Secret redaction for everything we log or publish.

Every secret value the configuration loads is registered here; log records are redacted at creation
(a record factory, so Prefect's API handler only ever sees the masked text) and artifacts pass through
`redact()` before they are published.
"""

from __future__ import annotations

import logging
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


def _install_record_factory() -> None:
    global _installed  # noqa: PLW0603 - the factory is process-wide by nature
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
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
