"""One verified TLS context per CA file per process for Prefect's API clients.

Prefect 3.9 makes a new `ssl.create_default_context(cafile=...)` for every API client it opens (and for its
version check), even for an http:// API: a backup run opens 13 of them, and each parses the whole CA bundle
(measured: 0.6 of the run's 1.3 CPU-s). A verified context is safe to share: nothing in those modules changes
one after making it, and httpx only sets the same ALPN list on it. Contexts with other arguments (the
insecure-skip-verify branch, which does change its context) are made fresh as before.
"""

from __future__ import annotations

import importlib
import os
import ssl
import threading
import types

# Prefect's modules that make their API client's context from `ssl.create_default_context(cafile=...)`
CLIENT_MODULES = ("prefect.client.orchestration", "prefect._internal.version_checking", "prefect._internal.websockets")


class SharedContexts(types.ModuleType):
    """`ssl` as those modules see it: the same module, but a verified context per CA file is made once."""

    def __init__(self) -> None:
        super().__init__("ssl")
        self.made: dict[tuple[str, int, int], ssl.SSLContext] = {}
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(ssl, name)

    def create_default_context(self, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *, cafile: str | None = None,
                               capath: str | None = None, cadata: str | bytes | None = None) -> ssl.SSLContext:
        if cafile is None or capath is not None or cadata is not None or purpose != ssl.Purpose.SERVER_AUTH:
            return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)
        st = os.stat(cafile)
        key = (os.path.realpath(cafile), st.st_mtime_ns, st.st_size)  # a renewed bundle makes a new context
        with self.lock:
            if key not in self.made:
                self.made[key] = ssl.create_default_context(purpose, cafile=cafile)
            return self.made[key]


def share_client_contexts() -> list[str]:
    """Give Prefect's client modules the shared-context `ssl`, with the context for Prefect's configured CA file
    made now (a warm-start zygote's runs then inherit it); returns the modules changed (none if a Prefect
    release no longer makes its contexts so: then nothing changes, and the tests say so)."""
    import certifi  # noqa: PLC0415 - Prefect's default CA bundle, as Prefect picks it
    from prefect.settings import PREFECT_API_SSL_CERT_FILE  # noqa: PLC0415

    shared = SharedContexts()
    shared.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())
    changed = []
    for name in CLIENT_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = shared
            changed.append(name)
    return changed
