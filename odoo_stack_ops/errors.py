"""One small error hierarchy: every message says what failed and what to do, never a secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

from odoo_stack_ops.redact import redact

if TYPE_CHECKING:
    from odoo_stack_ops.executors.base import Result


class OpsError(Exception):
    """Base of every error this project raises on purpose; its text is already redacted."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ConfigError(OpsError):
    """The stack configuration is invalid; raised before any host is touched."""


class ConnectError(OpsError):
    """A host, socket or service could not be reached (often transient)."""


class HostKeyError(ConnectError):
    """The SSH host key is unknown or changed: never transient, never retried."""


class AccessDenied(OpsError):
    """A service refused our credentials or privileges (wrong password, unknown role, no CONNECT right): fixed by
    configuration, never transient, never retried."""


class CommandFailed(OpsError):
    """A command exited non-zero; shows the masked command, exit code and the last stderr lines."""

    def __init__(self, result: Result, hint: str = "") -> None:
        self.result = result
        tail = "\n".join(result.stderr_text.splitlines()[-20:])
        text = f"command failed on {result.where} with exit code {result.exit_code}: {result.command.masked()}"
        if tail:
            text += f"\n--- last stderr lines ---\n{tail}"
        if hint:
            text += f"\nwhat to do: {hint}"
        super().__init__(text)


class CommandTimeout(CommandFailed):
    """A command ran past its timeout and was stopped."""


class VerificationFailed(OpsError):
    """A backup, restore or upgrade did not pass its checks."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectError, TimeoutError, ConnectionError)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (network, 5xx); host-key, access and config errors never are."""
    if isinstance(exc, HostKeyError | ConfigError | VerificationFailed | AccessDenied):
        return False
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    status = getattr(getattr(exc, "response", None), "get", lambda *_: None)("ResponseMetadata")
    if isinstance(status, dict):
        code = status.get("HTTPStatusCode") or 0
        return code >= 500 or code == 429
    return type(exc).__name__ in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                                  "SSHException", "OperationalError", "ChunkedEncodingError"}
