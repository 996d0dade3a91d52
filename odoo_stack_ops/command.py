"""Commands as values: an argv list plus environment, shown only in masked form.

Nothing here runs anything. Secrets travel in `env` (never in argv) and the masked form replaces them
with ***; executors decide how to deliver the environment safely on their side.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from odoo_stack_ops.redact import MASK, redact

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def ensure_identifier(value: str, what: str) -> str:
    """Return `value` when it is a plain identifier (database, module, role name); raise ValueError otherwise."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain identifier (letters, digits, _; max 63)")
    return value


@dataclass(frozen=True)
class Command:
    """An argv list with its environment; `env` values that are SecretStr are masked when shown."""

    argv: tuple[str, ...]
    env: Mapping[str, str | SecretStr] = field(default_factory=dict)
    cwd: str | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("a command needs at least one argument")
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        for name, value in self.env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            if "\n" in plain or "\0" in plain:
                raise ValueError(f"environment variable {name} holds a newline or NUL byte")

    @classmethod
    def of(cls, cmd: Command | Sequence[str], env: Mapping[str, str | SecretStr] | None = None) -> Command:
        """Coerce an argv list (or a Command) into a Command, merging extra `env`."""
        if isinstance(cmd, Command):
            return cmd if not env else cls(cmd.argv, {**cmd.env, **env}, cmd.cwd)
        if isinstance(cmd, str):
            raise TypeError("pass commands as argv lists, not shell strings")
        return cls(tuple(cmd), dict(env or {}))

    def plain_env(self) -> dict[str, str]:
        """The environment with secrets revealed: for executors only, never for logs."""
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in self.env.items()}

    def secret_names(self) -> list[str]:
        return [k for k, v in self.env.items() if isinstance(v, SecretStr)]

    def shell(self) -> str:
        """The argv quoted for a POSIX shell (no environment)."""
        return shlex.join(self.argv)

    def masked(self) -> str:
        """What may be logged: environment names with secrets as ***, argv quoted and redacted."""
        shown = [f"{k}={MASK if isinstance(v, SecretStr) else shlex.quote(v)}" for k, v in self.env.items()]
        return redact(" ".join([*shown, self.shell()]))

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"Command({self.masked()!r})"
