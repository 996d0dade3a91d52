"""An S3 endpoint that checks what DigitalOcean Spaces checks, for benches and the test bed.

Why: moto's server accepts any credentials and any part list, and burns ~6 CPU-s per 256 MB on the cores the
backup needs. This one speaks HTTPS (a throwaway CA generated at start), verifies each request's SigV4
signature with the secret key (403 SignatureDoesNotMatch / InvalidAccessKeyId), the body against
`x-amz-content-sha256` and `Content-MD5` / `x-amz-checksum-crc32` when sent (XAmzContentSHA256Mismatch,
BadDigest), gives each part ETag = MD5 of the part, and checks the part list of CompleteMultipartUpload
(InvalidPart, InvalidPartOrder, EntityTooSmall). Objects are files on disk; a completed multipart object is an
index of its part files (a metadata step, as in S3 and Ceph RGW under Spaces); the key index lives in memory.
`GET /_stats` (not an S3 call; `_` cannot start a bucket name) returns the requests counted per operation and
`DELETE /_stats` resets them.

Run as its own process: `python -m odoo_stack_ops.sandbox.s3_checking DIR PORT` with the credentials in
S3C_ACCESS_KEY / S3C_SECRET_KEY; it writes DIR/ca.pem and prints `ready`. Or use CheckingS3 below.
Self-contained: standard library and `cryptography` only (sandbox/tls.py; plus the project's helpers in
CheckingS3).
"""

from __future__ import annotations

import base64
import bisect
import collections
import hashlib
import hmac
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from odoo_stack_ops.sandbox.tls import make_ca_and_cert

CHUNK = 1 << 20
MIN_PART = 5 * 1024 * 1024  # S3 and Spaces: every part but the last at least 5 MiB
MAX_SKEW = timedelta(minutes=15)
XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclass
class Obj:
    files: list[str]
    size: int
    etag: str
    modified: float
    meta: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"


@dataclass
class Upload:
    bucket: str
    key: str
    initiated: float
    meta: dict[str, str]
    parts: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # number -> (file, md5 hex, size)


class Store:
    """Buckets, objects and uploads; metadata in memory, bytes in files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.buckets: dict[str, dict[str, Obj]] = {}
        self.sorted_keys: dict[str, list[str]] = {}
        self.lifecycle: dict[str, bytes] = {}
        self.uploads: dict[str, Upload] = {}
        self.counts: collections.Counter[str] = collections.Counter()

    def new_file(self) -> Path:
        return self.root / "data" / secrets.token_hex(16)

    def bucket(self, name: str) -> dict[str, Obj]:
        if name not in self.buckets:
            raise S3Error(404, "NoSuchBucket")
        return self.buckets[name]

    def put(self, bucket: str, key: str, obj: Obj) -> None:
        with self.lock:
            objects = self.bucket(bucket)
            old = objects.get(key)
            objects[key] = obj
            if old is None:
                bisect.insort(self.sorted_keys[bucket], key)
        if old is not None:
            self.unlink(old)

    def delete(self, bucket: str, key: str) -> None:
        with self.lock:
            old = self.bucket(bucket).pop(key, None)
            if old is not None:
                keys = self.sorted_keys[bucket]
                del keys[bisect.bisect_left(keys, key)]
        if old is not None:
            self.unlink(old)

    @staticmethod
    def unlink(obj: Obj) -> None:
        for f in obj.files:
            Path(f).unlink(missing_ok=True)


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_query(raw: str) -> str:
    """SigV4's canonical query string: each name and value URI-encoded, sorted (pure)."""
    pairs = []
    for pair in raw.split("&") if raw else []:
        k, _, v = pair.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def parse_authorization(header: str) -> dict[str, str]:
    """`AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` as a dict (pure)."""
    algo, _, rest = header.partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise S3Error(400, "AuthorizationHeaderMalformed", "only AWS4-HMAC-SHA256 is supported")
    fields = {}
    for item in rest.split(","):
        k, _, v = item.strip().partition("=")
        fields[k] = v
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        raise S3Error(400, "AuthorizationHeaderMalformed")
    return fields


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as botocore uses them
    store: Store
    access_key: str
    secret_key: str

    def log_message(self, *args: object) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _xml(self, body: str, status: int = 200) -> None:
        self._reply(status, ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>" + body).encode(),
                    {"Content-Type": "application/xml"})

    def _error(self, err: S3Error) -> None:
        self.close_connection = True  # the body may be unread
        self._reply(err.status, (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{err.code}</Code>"
                                 f"<Message>{escape(err.message)}</Message></Error>").encode(),
                    {"Content-Type": "application/xml", "Connection": "close"})

    def _authenticate(self, url: Any) -> str:
        """Verify the SigV4 signature; returns the signed payload hash (x-amz-content-sha256)."""
        header = self.headers.get("Authorization")
        if not header:
            raise S3Error(403, "AccessDenied", "anonymous access is not allowed")
        fields = parse_authorization(header)
        access_key, day, region, service, terminal = (fields["Credential"].split("/") + [""] * 5)[:5]
        if access_key != self.access_key:
            raise S3Error(403, "InvalidAccessKeyId", "the access key does not exist")
        if service != "s3" or terminal != "aws4_request":
            raise S3Error(400, "AuthorizationHeaderMalformed")
        amz_date = self.headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError as exc:
            raise S3Error(403, "AccessDenied", "missing or malformed x-amz-date") from exc
        if abs(datetime.now(UTC) - when) > MAX_SKEW or not amz_date.startswith(day):
            raise S3Error(403, "RequestTimeTooSkewed")
        payload = self.headers.get("x-amz-content-sha256")
        if not payload:
            raise S3Error(400, "InvalidRequest", "missing x-amz-content-sha256")
        signed = fields["SignedHeaders"].split(";")
        if "host" not in signed:
            raise S3Error(403, "SignatureDoesNotMatch", "host must be signed")
        canonical_headers = "".join(
            f"{name}:{','.join(' '.join(v.split()) for v in self.headers.get_all(name, []))}\n" for name in signed)
        canonical = "\n".join([self.command, url.path, canonical_query(url.query), canonical_headers,
                               fields["SignedHeaders"], payload])
        scope = f"{day}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(signing_key(self.secret_key, day, region, service), to_sign.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise S3Error(403, "SignatureDoesNotMatch",
                          "the request signature we calculated does not match the signature you provided")
        return payload

    def _body(self, payload: str, sink: Any = None) -> tuple[bytes, str, int]:
        """Read the body (into `sink` when given), checking it against the signed SHA-256, Content-MD5 and
        x-amz-checksum-crc32 when present. Returns (body or b"", MD5 hex, size)."""
        if self.headers.get("Transfer-Encoding"):
            raise S3Error(501, "NotImplemented", "chunked bodies are not supported")
        left = int(self.headers.get("Content-Length") or 0)
        md5 = hashlib.md5(usedforsecurity=False)
        sha = hashlib.sha256() if payload != "UNSIGNED-PAYLOAD" else None
        crc, want_crc = 0, self.headers.get("x-amz-checksum-crc32")
        held, size = [], 0
        while left:
            data = self.rfile.read(min(CHUNK, left))
            if not data:
                raise ConnectionError("client went away mid-body")
            md5.update(data)
            if sha is not None:
                sha.update(data)
            if want_crc:
                crc = zlib.crc32(data, crc)
            if sink is not None:
                sink.write(data)
            else:
                held.append(data)
            left -= len(data)
            size += len(data)
        if sha is not None and sha.hexdigest() != payload:
            raise S3Error(400, "XAmzContentSHA256Mismatch")
        want_md5 = self.headers.get("Content-MD5")
        if want_md5 is not None and base64.b64decode(want_md5) != md5.digest():
            raise S3Error(400, "BadDigest", "the Content-MD5 you specified did not match what we received")
        if want_crc and base64.b64encode(crc.to_bytes(4, "big")).decode() != want_crc:
            raise S3Error(400, "BadDigest", "the CRC32 you specified did not match what we received")
        return b"".join(held), md5.hexdigest(), size

    def _handle(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_stats":
            self._stats()
            return
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        query = {k: unquote(v) for k, _, v in (p.partition("=") for p in url.query.split("&") if p)}
        op = "?"
        try:
            payload = self._authenticate(url)
            op, handler = self._route(bucket, key, query)
            with self.store.lock:
                self.store.counts[op] += 1
            handler(bucket, key, query, payload)
        except S3Error as err:
            with self.store.lock:
                self.store.counts[f"error:{err.code}"] += 1
            self._error(err)
        except ConnectionError:
            self.close_connection = True

    def _stats(self) -> None:
        with self.store.lock:
            body = json.dumps(dict(self.store.counts)).encode()
            if self.command == "DELETE":
                self.store.counts.clear()
        self._reply(200, body, {"Content-Type": "application/json"})

    def _route(self, bucket: str, key: str, q: dict[str, str]) -> tuple[str, Any]:
        m = self.command
        if not bucket:
            raise S3Error(501, "NotImplemented", "ListBuckets is not supported")
        if not key:
            table = {("PUT", "lifecycle"): "PutBucketLifecycleConfiguration",
                     ("GET", "lifecycle"): "GetBucketLifecycleConfiguration",
                     ("DELETE", "lifecycle"): "DeleteBucketLifecycle", ("GET", "uploads"): "ListMultipartUploads",
                     ("POST", "delete"): "DeleteObjects"}
            for (method, sub), name in table.items():
                if m == method and sub in q:
                    return name, getattr(self, "op_" + name)
            plain = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "GET": "ListObjectsV2", "DELETE": "DeleteBucket"}
            if m in plain and (m != "GET" or q.get("list-type") == "2"):
                return plain[m], getattr(self, "op_" + plain[m])
        else:
            if m == "POST" and "uploads" in q:
                return "CreateMultipartUpload", self.op_CreateMultipartUpload
            if m == "POST" and "uploadId" in q:
                return "CompleteMultipartUpload", self.op_CompleteMultipartUpload
            if m == "PUT" and "uploadId" in q and "partNumber" in q:
                return "UploadPart", self.op_UploadPart
            if m == "DELETE" and "uploadId" in q:
                return "AbortMultipartUpload", self.op_AbortMultipartUpload
            if m == "PUT" and not q and not self.headers.get("x-amz-copy-source"):
                return "PutObject", self.op_PutObject
            if m in ("GET", "HEAD") and not q:
                return ("GetObject" if m == "GET" else "HeadObject"), self.op_GetObject
            if m == "DELETE" and not q:
                return "DeleteObject", self.op_DeleteObject
        raise S3Error(501, "NotImplemented", f"{m} {sorted(q)} is not supported by this endpoint")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

    # -- buckets -----------------------------------------------------------------------------------------
    def op_CreateBucket(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self._body(payload)
        with self.store.lock:
            if bucket in self.store.buckets:
                raise S3Error(409, "BucketAlreadyOwnedByYou")
            self.store.buckets[bucket], self.store.sorted_keys[bucket] = {}, []
        self._reply(200, headers={"Location": "/" + bucket})

    def op_HeadBucket(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self.store.bucket(bucket)
        self._reply(200)

    def op_DeleteBucket(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        with self.store.lock:
            if self.store.bucket(bucket):
                raise S3Error(409, "BucketNotEmpty")
            del self.store.buckets[bucket], self.store.sorted_keys[bucket]
        self._reply(204)

    def op_PutBucketLifecycleConfiguration(self, bucket: str, key: str, q: dict[str, str],  # noqa: N802
                                           payload: str) -> None:
        if not (self.headers.get("Content-MD5") or self.headers.get("x-amz-checksum-crc32")):
            raise S3Error(400, "InvalidRequest", "Content-MD5 or a checksum is required")
        body, _, _ = self._body(payload)
        self.store.bucket(bucket)
        self.store.lifecycle[bucket] = body
        self._reply(200)

    def op_GetBucketLifecycleConfiguration(self, bucket: str, key: str, q: dict[str, str],  # noqa: N802
                                           payload: str) -> None:
        self.store.bucket(bucket)
        if bucket not in self.store.lifecycle:
            raise S3Error(404, "NoSuchLifecycleConfiguration")
        self._reply(200, self.store.lifecycle[bucket], {"Content-Type": "application/xml"})

    def op_DeleteBucketLifecycle(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self.store.bucket(bucket)
        self.store.lifecycle.pop(bucket, None)
        self._reply(204)

    def op_ListObjectsV2(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        prefix, max_keys = q.get("prefix", ""), min(int(q.get("max-keys", 1000)), 1000)
        after = q.get("continuation-token") or q.get("start-after") or ""
        if "continuation-token" in q:
            after = base64.urlsafe_b64decode(after.encode()).decode()
        with self.store.lock:
            objects, keys = self.store.bucket(bucket), self.store.sorted_keys[bucket]
            i = max(bisect.bisect_left(keys, prefix), bisect.bisect_right(keys, after) if after else 0)
            page: list[tuple[str, Obj]] = []
            while i < len(keys) and keys[i].startswith(prefix) and len(page) < max_keys:
                page.append((keys[i], objects[keys[i]]))
                i += 1
            truncated = i < len(keys) and keys[i].startswith(prefix)
        items = "".join(f"<Contents><Key>{escape(k)}</Key><LastModified>{_iso(o.modified)}</LastModified>"
                        f"<ETag>&quot;{o.etag}&quot;</ETag><Size>{o.size}</Size>"
                        "<StorageClass>STANDARD</StorageClass></Contents>" for k, o in page)
        token = ""
        if truncated:
            token = ("<NextContinuationToken>" + base64.urlsafe_b64encode(page[-1][0].encode()).decode()
                     + "</NextContinuationToken>")
        self._xml(f"<ListBucketResult xmlns=\"{XMLNS}\"><Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}"
                  f"</Prefix><KeyCount>{len(page)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"
                  f"<IsTruncated>{str(truncated).lower()}</IsTruncated>{items}{token}</ListBucketResult>")

    def op_ListMultipartUploads(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        prefix = q.get("prefix", "")
        with self.store.lock:
            self.store.bucket(bucket)
            ups = sorted((u.key, uid, u.initiated) for uid, u in self.store.uploads.items()
                         if u.bucket == bucket and u.key.startswith(prefix))
        items = "".join(f"<Upload><Key>{escape(k)}</Key><UploadId>{uid}</UploadId><Initiated>{_iso(t)}</Initiated>"
                        "<StorageClass>STANDARD</StorageClass></Upload>" for k, uid, t in ups)
        self._xml(f"<ListMultipartUploadsResult xmlns=\"{XMLNS}\"><Bucket>{escape(bucket)}</Bucket>"
                  f"<Prefix>{escape(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"
                  f"{items}</ListMultipartUploadsResult>")

    def op_DeleteObjects(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        if not (self.headers.get("Content-MD5") or self.headers.get("x-amz-checksum-crc32")):
            raise S3Error(400, "InvalidRequest", "Content-MD5 or a checksum is required for DeleteObjects")
        body, _, _ = self._body(payload)
        doc = ET.fromstring(body)  # noqa: S314 - the bench's own client
        keys = [e.text or "" for e in doc.iter() if e.tag.endswith("Key")]
        quiet = any((e.text or "").lower() == "true" for e in doc.iter() if e.tag.endswith("Quiet"))
        if len(keys) > 1000:
            raise S3Error(400, "MalformedXML", "at most 1000 keys per request")
        for k in keys:
            self.store.delete(bucket, k)
        done = "" if quiet else "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in keys)
        self._xml(f"<DeleteResult xmlns=\"{XMLNS}\">{done}</DeleteResult>")

    # -- objects -----------------------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-amz-meta-")}

    def _body_to_file(self, payload: str) -> tuple[Any, str, int]:
        """The checked body in a new file of the store (removed again when a check refuses it)."""
        path = self.store.new_file()
        try:
            with path.open("wb") as fh:
                _, etag, size = self._body(payload, fh)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, etag, size

    def op_PutObject(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self.store.bucket(bucket)
        path, etag, size = self._body_to_file(payload)
        self.store.put(bucket, key, Obj([str(path)], size, etag, time.time(), self._meta(),
                                        self.headers.get("Content-Type", "application/octet-stream")))
        self._reply(200, headers={"ETag": f'"{etag}"'})

    def op_GetObject(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        with self.store.lock:
            obj = self.store.bucket(bucket).get(key)
        if obj is None:
            raise S3Error(404, "NoSuchKey")
        if self.headers.get("Range"):
            raise S3Error(501, "NotImplemented", "ranged GET is not supported by this endpoint")
        self.send_response(200)
        for k, v in {"Content-Length": str(obj.size), "Content-Type": obj.content_type, "ETag": f'"{obj.etag}"',
                     "Last-Modified": _http_date(obj.modified), **obj.meta}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "GET":
            for f in obj.files:
                with open(f, "rb") as fh:
                    shutil.copyfileobj(fh, self.wfile, CHUNK)

    def op_DeleteObject(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self.store.bucket(bucket)
        self.store.delete(bucket, key)
        self._reply(204)

    # -- multipart ---------------------------------------------------------------------------------------
    def _upload(self, q: dict[str, str], bucket: str, key: str) -> Upload:
        up = self.store.uploads.get(q["uploadId"])
        if up is None or (up.bucket, up.key) != (bucket, key):
            raise S3Error(404, "NoSuchUpload")
        return up

    def op_CreateMultipartUpload(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        self._body(payload)
        self.store.bucket(bucket)
        uid = secrets.token_hex(16)
        with self.store.lock:
            self.store.uploads[uid] = Upload(bucket, key, time.time(), self._meta())
        self._xml(f"<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{escape(bucket)}</Bucket>"
                  f"<Key>{escape(key)}</Key><UploadId>{uid}</UploadId></InitiateMultipartUploadResult>")

    def op_UploadPart(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        number = int(q["partNumber"])
        if not 1 <= number <= 10000:
            raise S3Error(400, "InvalidArgument", "part number must be between 1 and 10000")
        self._upload(q, bucket, key)
        path, etag, size = self._body_to_file(payload)
        with self.store.lock:
            up = self.store.uploads.get(q["uploadId"])
            old = up.parts.get(number) if up else None
            if up is not None:
                up.parts[number] = (str(path), etag, size)
        if up is None:  # aborted meanwhile
            path.unlink(missing_ok=True)
            raise S3Error(404, "NoSuchUpload")
        if old:
            Path(old[0]).unlink(missing_ok=True)
        self._reply(200, headers={"ETag": f'"{etag}"'})

    def op_CompleteMultipartUpload(self, bucket: str, key: str, q: dict[str, str],  # noqa: N802
                                   payload: str) -> None:
        body, _, _ = self._body(payload)
        doc = ET.fromstring(body)  # noqa: S314 - the bench's own client
        listed = []
        for part in (e for e in doc.iter() if e.tag.endswith("Part")):
            fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "") for c in part}
            listed.append((int(fields.get("PartNumber", 0)), fields.get("ETag", "").strip('"')))
        if not listed:
            raise S3Error(400, "MalformedXML", "the part list is empty")
        numbers = [n for n, _ in listed]
        if numbers != sorted(set(numbers)):
            raise S3Error(400, "InvalidPartOrder", "the list of parts was not in ascending order")
        with self.store.lock:
            up = self._upload(q, bucket, key)
            chosen = []
            for i, (n, etag) in enumerate(listed):
                have = up.parts.get(n)
                if have is None or have[1] != etag:
                    raise S3Error(400, "InvalidPart", f"part {n} was not uploaded or its ETag does not match")
                if i < len(listed) - 1 and have[2] < MIN_PART:
                    raise S3Error(400, "EntityTooSmall", f"part {n} is smaller than 5 MiB")
                chosen.append(have)
            del self.store.uploads[q["uploadId"]]
        for n, (f, _, _) in up.parts.items():
            if n not in numbers:
                Path(f).unlink(missing_ok=True)
        etag = hashlib.md5(b"".join(bytes.fromhex(e) for _, e, _ in chosen), usedforsecurity=False).hexdigest()
        etag = f"{etag}-{len(chosen)}"
        self.store.put(bucket, key, Obj([f for f, _, _ in chosen], sum(s for _, _, s in chosen), etag, time.time(),
                                        up.meta))
        self._xml(f"<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{escape(bucket)}</Bucket>"
                  f"<Key>{escape(key)}</Key><ETag>&quot;{etag}&quot;</ETag></CompleteMultipartUploadResult>")

    def op_AbortMultipartUpload(self, bucket: str, key: str, q: dict[str, str], payload: str) -> None:  # noqa: N802
        with self.store.lock:
            up = self._upload(q, bucket, key)
            del self.store.uploads[q["uploadId"]]
        for f, _, _ in up.parts.values():
            Path(f).unlink(missing_ok=True)
        self._reply(204)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _http_date(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def serve(root: Path, port: int, access_key: str, secret_key: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    ca, cert, key = make_ca_and_cert(root / "tls")
    shutil.copy(ca, root / "ca.pem")
    handler = type("BoundHandler", (Handler,), {"store": Store(root), "access_key": access_key,
                                                "secret_key": secret_key})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


class CheckingS3:
    """The checking endpoint as a child process; objects under `root`, CA at root/ca.pem."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        from odoo_stack_ops.prefect_local import free_port  # noqa: PLC0415

        self.root, self.port = root, port or free_port()
        self.endpoint = f"https://127.0.0.1:{self.port}"
        self.access_key = "CHECK" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.ca_bundle = root / "ca.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> CheckingS3:
        env = {**os.environ, "S3C_ACCESS_KEY": self.access_key, "S3C_SECRET_KEY": self.secret_key}
        self.proc = subprocess.Popen([sys.executable, "-m", "odoo_stack_ops.sandbox.s3_checking", str(self.root),
                                      str(self.port)], stdout=subprocess.PIPE, env=env, start_new_session=True,
                                     cwd=Path(__file__).resolve().parents[2])
        assert self.proc.stdout is not None  # noqa: S101
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if line != b"ready\n" or time.monotonic() > deadline:
            raise RuntimeError(f"s3_checking did not start (said {line!r})")
        return self

    def spaces_config(self, bucket: str, prefix: str = "odoo-erp-prod", secret_key: str | None = None) -> Any:
        from pydantic import SecretStr  # noqa: PLC0415

        from odoo_stack_ops.config import SpacesConfig  # noqa: PLC0415

        return SpacesConfig(region="sgp1", endpoint=self.endpoint, bucket=bucket, prefix=prefix,
                            access_key_id=SecretStr(self.access_key),
                            secret_access_key=SecretStr(secret_key or self.secret_key), ca_bundle=self.ca_bundle)

    def client(self) -> Any:
        from odoo_stack_ops.backup.spaces import client  # noqa: PLC0415

        return client(self.spaces_config("unused"))

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "sgp1"})
        return name

    def _stats(self, method: str) -> dict[str, int]:
        import urllib.request  # noqa: PLC0415

        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        req = urllib.request.Request(f"{self.endpoint}/_stats", method=method)  # noqa: S310
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read())

    def requests(self) -> dict[str, int]:
        """Requests counted per S3 operation (and `error:<Code>`) since start or the last reset."""
        return self._stats("GET")

    def reset_requests(self) -> dict[str, int]:
        return self._stats("DELETE")

    def stop(self) -> None:
        from odoo_stack_ops.prefect_local import stop_group  # noqa: PLC0415

        stop_group(self.proc)

    def __enter__(self) -> CheckingS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), os.environ["S3C_ACCESS_KEY"], os.environ["S3C_SECRET_KEY"])
