"""DigitalOcean Spaces (S3 API) access: one tested client setting, streamed multipart uploads, cleanup.

Spaces is not Amazon S3: boto3 >= 1.36 sends integrity checksums by default that Spaces rejects, so the
client computes them only when required; integrity is ours (SHA-256 in the manifest, verified on read).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import SecretStr

from odoo_stack_ops.config import SpacesConfig
from odoo_stack_ops.errors import AccessDenied, ConnectError, OpsError
from odoo_stack_ops.pools import GIVE_UP_S, DaemonPool

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # small parts keep the leg's memory low; after GROW_AFTER parts they are 8x larger,
GROW_AFTER = 1000  # so S3's 10,000 parts cover 8 GB + 9,000 x 64 MiB = 584 GB
MAX_INFLIGHT = 2  # parts uploading while the next one fills: bounds memory to (2 + 1) * PART_SIZE


def boto_config(endpoint: str) -> Config:
    """The client settings for Spaces; path-style addressing only for IP/localhost endpoints (tests)."""
    host = urlparse(endpoint).hostname or ""
    try:
        ipaddress.ip_address(host)
        style = "path"
    except ValueError:
        style = "path" if host == "localhost" else "virtual"
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": style},
        retries={"mode": "standard", "max_attempts": 6},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=16,
    )


_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()


def client(cfg: SpacesConfig) -> Any:
    """A boto3 S3 client for the configured Spaces endpoint.

    Clients come from one session per process: a new session parses botocore's S3 model again (~0.15 CPU-s per
    client; a nightly makes six). A session is not thread-safe, so clients are made under a lock (a client is)."""
    global _SESSION  # noqa: PLW0603 - the process's one session
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client(
            "s3",
            region_name=cfg.region,
            endpoint_url=cfg.endpoint,
            aws_access_key_id=cfg.access_key_id.get_secret_value() if cfg.access_key_id else None,
            aws_secret_access_key=cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None,
            config=boto_config(cfg.endpoint),
            verify=str(cfg.ca_bundle) if cfg.ca_bundle else None,
        )


def warm() -> None:
    """Parse the S3 model now (a warm-start zygote does, so that the runs forked from it do not)."""
    key = SecretStr("warm")  # given, so that no credential lookup runs (it may ask an instance metadata service)
    client(SpacesConfig.model_construct(region="us-east-1", endpoint="https://127.0.0.1", access_key_id=key,
                                        secret_access_key=key, ca_bundle=None))


@dataclass(frozen=True)
class Bucket:
    """Where a stack's backups live: the S3 client, the bucket and the stack's key prefix, passed as one value."""

    s3: Any
    name: str
    prefix: str

    @classmethod
    def open(cls, cfg: SpacesConfig) -> Bucket:
        return cls(client(cfg), cfg.bucket, cfg.prefix)

    def read_chunks(self, key: str, chunk: int = 1 << 20, offset: int = 0, length: int = -1) -> Iterator[bytes]:
        return read_chunks(self.s3, self.name, key, chunk, offset, length)

    def get_bytes(self, key: str) -> bytes:
        return get_bytes(self.s3, self.name, key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        put_bytes(self.s3, self.name, key, data, content_type)

    def iter_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        return iter_objects(self.s3, self.name, prefix)


def explain(exc: Exception, bucket: str, key: str = "") -> OpsError:
    """Turn a botocore error into one that says what to do."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "SignatureDoesNotMatch":
            return AccessDenied(f"SPACES_SECRET_ACCESS_KEY is wrong for SPACES_ACCESS_KEY_ID: Spaces refused the "
                                f"request signature for {bucket}/{key} ({code}); set the secret issued with that key")
        if code == "InvalidAccessKeyId":
            return AccessDenied(f"SPACES_ACCESS_KEY_ID is unknown to Spaces ({code} for {bucket}/{key}): set an "
                                f"existing key and its SPACES_SECRET_ACCESS_KEY")
        if code == "AccessDenied" or status in (401, 403):  # a HEAD's 403 carries no code
            return AccessDenied(f"Spaces refused access to {bucket}/{key} ({code}): check SPACES_ACCESS_KEY_ID/"
                                f"SPACES_SECRET_ACCESS_KEY and that the key may write to this bucket")
        if code == "NoSuchBucket":
            return OpsError(f"bucket {bucket!r} does not exist at the Spaces endpoint: create it or fix SPACES_BUCKET")
        if status >= 500 or status == 429:
            return ConnectError(f"Spaces answered {status} {code} for {bucket}/{key}: transient, will retry")
        return OpsError(f"Spaces error {code} (HTTP {status}) for {bucket}/{key}")
    return ConnectError(f"Spaces endpoint unreachable ({type(exc).__name__}) for {bucket}/{key}")


class HashingCounter:
    """SHA-256 and byte count of everything passed through `update`."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)


@dataclass(frozen=True)
class Uploaded:
    key: str
    size: int
    sha256: str
    parts: int


class MultipartWriter:
    """A write-only file object that uploads to `key` in parts while the producer keeps writing.

    Memory is bounded by MAX_INFLIGHT + 1 parts (each at most part_size plus one write). `close()` completes
    the upload; any exception inside the `with` block (or `abort()`) aborts it so no parts are left behind.
    Nothing is visible at `key` until completion.
    """

    def __init__(self, s3: Any, bucket: str, key: str, *, part_size: int = PART_SIZE,
                 metadata: dict[str, str] | None = None) -> None:
        self.s3, self.bucket, self.key, self.part_size = s3, bucket, key, part_size
        self.hash = HashingCounter()
        self._chunks: list[bytes] = []
        self._pending = 0
        self._parts: list[Future[dict[str, Any]]] = []
        self._pool = DaemonPool(MAX_INFLIGHT, "s3part")
        self._slots = threading.BoundedSemaphore(MAX_INFLIGHT)
        self._closed = False
        try:
            self.upload_id = s3.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata=metadata or {}, ContentType="application/octet-stream"
            )["UploadId"]
        except Exception as exc:
            self._pool.shutdown(0)
            raise explain(exc, bucket, key) from exc

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        """Collect writes; once part_size is reached they go out as one part (a part may overshoot by the last
        write: S3 only needs parts of at least 5 MiB). One copy per byte, no growing or shifting buffer."""
        self.hash.update(data)
        self._chunks.append(bytes(data) if not isinstance(data, bytes) else data)
        self._pending += len(data)
        if self._pending >= (self.part_size if len(self._parts) < GROW_AFTER else self.part_size * 8):
            self._submit_pending()
        return len(data)

    def _submit_pending(self) -> None:
        part = b"".join(self._chunks)
        self._chunks.clear()
        self._pending = 0
        self._submit(part)

    def flush(self) -> None:
        pass

    def _submit(self, chunk: bytes) -> None:
        for done in [f for f in self._parts if f.done()]:
            done.result()  # surface a failed part early
        self._slots.acquire()
        number = len(self._parts) + 1
        future = self._pool.submit(self._upload_part, number, chunk)
        future.add_done_callback(lambda _f: self._slots.release())
        self._parts.append(future)

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        try:
            resp = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                       PartNumber=number, Body=chunk)
        except Exception as exc:
            raise explain(exc, self.bucket, self.key) from exc
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def close(self) -> Uploaded:
        """Upload the last part and complete; returns size and SHA-256 of what was stored."""
        if self._closed:
            raise OpsError("multipart upload already closed")
        if self._pending or not self._parts:
            self._submit_pending()
        try:
            parts = [f.result() for f in self._parts]
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts})
        except Exception as exc:
            self.abort()
            raise exc if isinstance(exc, OpsError) else explain(exc, self.bucket, self.key) from exc
        self._closed = True
        self._pool.shutdown()
        return Uploaded(self.key, self.hash.size, self.hash.sha256.hexdigest(), len(parts))

    def abort(self, wait_s: float | None = None) -> None:
        """Abort the upload (idempotent); parts already sent are discarded by the server. The parts still sending
        are waited for, since one that lands after the abort is stored unlisted; a cancel (`wait_s`) waits only
        so long: a part hung on a dead connection would hold the run until Prefect kills it."""
        if self._closed:
            return
        self._closed = True
        if not self._pool.shutdown(wait_s):
            log.warning("aborting the upload of %s with a part still sending after %.0f s (cancelled)", self.key,
                        wait_s)
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:  # noqa: BLE001 - the original error matters more; the sweeper retries later
            log.warning("could not abort multipart upload of %s (%s); the next run sweeps it", self.key,
                        type(exc).__name__)

    def __enter__(self) -> MultipartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort(None if issubclass(exc_type, Exception) else GIVE_UP_S)


def check_access(s3: Any, bucket: str, prefix: str) -> None:
    """Raise AccessDenied naming the setting to fix if Spaces refuses our credentials for the bucket. A one-key
    listing rather than HEAD: a HEAD's 403 has no body to tell a wrong secret from an unknown key."""
    try:
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        raise explain(exc, bucket, prefix) from exc


def abort_stale_uploads(s3: Any, bucket: str, prefix: str, older_than: timedelta = timedelta(hours=48),
                        now: datetime | None = None) -> list[str]:
    """Abort multipart uploads under `prefix` initiated at least `older_than` before `now`; returns their keys.

    A younger upload may be another run's, still writing (a manual run beside the nightly one): it is left
    alone. `older_than` is the GC grace (backup.gc_grace_h), longer than any run."""
    aborted = []
    cutoff = (now or datetime.now(UTC)) - older_than
    paginator = s3.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            if up["Initiated"] <= cutoff:
                s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted.append(up["Key"])
    if aborted:
        log.warning("aborted %d multipart upload(s) left incomplete for more than %s by an earlier run",
                    len(aborted), older_than)
    return aborted


def iter_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under `prefix` (paginated): dicts with Key, Size, LastModified."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def read_chunks(s3: Any, bucket: str, key: str, chunk: int = 1 << 20, offset: int = 0, length: int = -1
                ) -> Iterator[bytes]:
    """Stream an object's bytes (or `length` of them from `offset`: one blob of a pack)."""
    extra = {"Range": f"bytes={offset}-{offset + length - 1}"} if length >= 0 else {}
    if length == 0:
        return
    try:
        body = s3.get_object(Bucket=bucket, Key=key, **extra)["Body"]
    except Exception as exc:
        raise explain(exc, bucket, key) from exc
    try:
        yield from body.iter_chunks(chunk)
    finally:
        body.close()


def put_bytes(s3: Any, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except Exception as exc:
        raise explain(exc, bucket, key) from exc


def get_bytes(s3: Any, bucket: str, key: str) -> bytes:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise explain(exc, bucket, key) from exc


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> int:
    """Delete keys in batches of 1,000; returns how many were deleted; raises on any per-key error."""
    deleted = 0
    for i in range(0, len(keys), 1000):
        batch = keys[i: i + 1000]
        resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        if resp.get("Errors"):
            first = resp["Errors"][0]
            raise OpsError(f"Spaces refused to delete {len(resp['Errors'])} key(s), e.g. {first.get('Key')}: "
                           f"{first.get('Code')}")
        deleted += len(batch)
    return deleted
