"""age encryption on the worker, streamed: nothing unencrypted reaches Spaces when recipients are set.

Backups are plain age files (X25519 recipients), so `age -d -i key.txt` restores them by hand. pyrage
encrypts and decrypts between file objects (pull-based); a thread and a bounded queue adapt that to our
push-style writers and chunk iterators, keeping memory bounded.
"""

from __future__ import annotations

import hashlib
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyrage
from pydantic import SecretStr

from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.streams import IterReader

_DONE = object()
QUEUE_DEPTH = 8


def fingerprint(recipient: str) -> str:
    """A short, stable name for a public key (shown in manifests and errors)."""
    return "age:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def parse_recipients(recipients: Iterable[str]) -> list[Any]:
    try:
        return [pyrage.x25519.Recipient.from_str(r.strip()) for r in recipients]
    except pyrage.RecipientError as exc:
        raise OpsError(f"invalid age recipient in backup.age_recipients ({exc}); expected age1… public keys") from exc


def parse_identities(identity: SecretStr | str | None) -> list[Any]:
    """Identities from a secret holding one or more AGE-SECRET-KEY-… lines (an age key file's content)."""
    if identity is None:
        return []
    text = identity.get_secret_value() if isinstance(identity, SecretStr) else identity
    keys = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
    try:
        return [pyrage.x25519.Identity.from_str(k) for k in keys]
    except pyrage.IdentityError:
        raise OpsError("backup.age_identity holds an invalid age identity (expected AGE-SECRET-KEY-… lines)") from None


def object_tag(recipients: list[str]) -> str:
    """Names the recipient set in encrypted object keys (order-independent)."""
    return hashlib.sha256("\n".join(sorted(r.strip() for r in recipients)).encode()).hexdigest()[:12]


def encryption_record(recipients: list[str]) -> dict[str, Any]:
    return {"enabled": True, "format": "age-v1", "recipients": [r.strip() for r in recipients],
            "fingerprints": [fingerprint(r) for r in recipients], "object_tag": object_tag(recipients)}


class EncryptingWriter:
    """Write plaintext in, age ciphertext goes to `sink` (a writer); `close()` finishes the age stream."""

    def __init__(self, sink: Any, recipients: list[Any]) -> None:
        self._q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sink, recipients), daemon=True)
        self._thread.start()

    def _run(self, sink: Any, recipients: list[Any]) -> None:
        try:
            pyrage.encrypt_io(IterReader(iter(self._q.get, _DONE)), sink, recipients)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's caller
            self._error = exc
            while self._q.get() is not _DONE:  # unblock the producer
                pass

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        if self._error:
            raise OpsError(f"encryption failed: {self._error}")
        self._q.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._q.put(_DONE)
        self._thread.join()
        if self._error:
            raise OpsError(f"encryption failed: {self._error}")


def encrypting_writer(recipients: list[str]) -> Callable[[Any], EncryptingWriter]:
    parsed = parse_recipients(recipients)
    return lambda sink: EncryptingWriter(sink, parsed)


def file_encryptor(recipients: list[str]) -> Callable[[Any], Any]:
    """file → a new spooled file holding its age encryption (for filestore objects)."""
    parsed = parse_recipients(recipients)

    def encrypt(src: Any) -> Any:
        out = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - returned to the caller
        pyrage.encrypt_io(src, out, parsed)
        return out

    return encrypt


class _QueueWriter:
    def __init__(self, q: queue.Queue[Any]) -> None:
        self.q = q

    def write(self, data: bytes) -> int:
        self.q.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def decrypt_chunks(chunks: Iterable[bytes], identities: list[Any], needed: list[str]) -> Iterator[bytes]:
    """Decrypt an age stream given as chunks; a wrong key or altered bytes raise with what the backup needs."""
    q: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pyrage.decrypt_io(IterReader(chunks), _QueueWriter(q), identities)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            q.put(_DONE)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while (item := q.get()) is not _DONE:
        yield item
    thread.join()
    if errors:
        exc = errors[0]
        if not identities or (isinstance(exc, pyrage.DecryptError) and "no matching keys" in str(exc).lower()):
            raise OpsError(f"no identity can decrypt this backup: it needs the private key of {needed}; set "
                           f"backup.age_identity (BACKUP_AGE_IDENTITY or a Prefect Secret block) to that key") from exc
        raise VerificationFailed(f"decryption failed, the object was altered or truncated: {exc}") from exc


def decryptor(identity: SecretStr | None, encryption: dict[str, Any]) -> Callable[[Iterable[bytes]], Iterator[bytes]]:
    """A chunks→chunks decrypting function for a backup's encryption record."""
    identities = parse_identities(identity)
    needed = encryption.get("fingerprints", [])
    if not identities:
        raise OpsError(f"backup is encrypted for {needed} but no backup.age_identity is configured")
    return lambda chunks: decrypt_chunks(chunks, identities, needed)
