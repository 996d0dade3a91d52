"""A lean S3 endpoint for the backup bench: multipart upload, GET/HEAD/DELETE of objects, on disk.

Why: moto's server spends about 6 CPU-seconds per 256 MB it ingests. On this 2-core machine that CPU is
taken from pg_dump and zstd, so the bench would measure moto, not our pipeline; DigitalOcean Spaces runs on
its own machines. This server does what S3 must do per byte (receive it, store it, MD5 it for the part's
ETag) and little else. Like S3 (and Ceph RGW, under Spaces), completing a multipart upload is a metadata step:
the object is an index of its part files, nothing is copied. It checks that requests carry a SigV4 Authorization header for its access key, but
does not recompute signatures. Run as its own process: `python -m bench.s3_lean DIR PORT ACCESS_KEY`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree as ET

CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as botocore uses them
    root: Path
    access_key: str

    def log_message(self, *args: object) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------------------
    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(url.query, keep_blank_values=True)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._reply(status, f"<?xml version='1.0'?><Error><Code>{code}</Code></Error>".encode(),
                    {"Content-Type": "application/xml"})

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("AWS4-HMAC-SHA256 Credential=" + self.access_key + "/"):
            return True
        self._error(403, "InvalidAccessKeyId")
        return False

    def _object(self, bucket: str, key: str) -> Path:
        """The object's index: a JSON list of the data files that make it, in order."""
        return self.root / "objects" / bucket / quote(key, safe="")

    def _publish(self, bucket: str, key: str, files: list[Path]) -> None:
        self._drop(bucket, key)
        index = self._object(bucket, key)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps([str(f) for f in files]))

    def _drop(self, bucket: str, key: str) -> None:
        index = self._object(bucket, key)
        if index.is_file():
            for f in json.loads(index.read_text()):
                Path(f).unlink(missing_ok=True)
            index.unlink()

    def _body_to(self, path: Path) -> str:
        """Stream the request body into `path`; returns its MD5 (the part's ETag, as S3 computes it)."""
        left = int(self.headers.get("Content-Length", 0))
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("wb") as fh:
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    raise ConnectionError("client went away mid-body")
                md5.update(data)
                fh.write(data)
                left -= len(data)
        return md5.hexdigest()

    # -- operations -------------------------------------------------------------------------------------
    def do_POST(self) -> None:
        if not self._authorized():
            return
        bucket, key, q = self._target()
        if "uploads" in q:  # CreateMultipartUpload
            upload = secrets.token_hex(16)
            (self.root / "uploads" / upload).mkdir(parents=True)
            body = (f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                    f"<UploadId>{upload}</UploadId></InitiateMultipartUploadResult>")
            self._reply(200, body.encode(), {"Content-Type": "application/xml"})
        elif "uploadId" in q:  # CompleteMultipartUpload: parts concatenated in the order the client lists
            parts_dir = self.root / "uploads" / q["uploadId"][0]
            doc = ET.fromstring(self.rfile.read(int(self.headers.get("Content-Length", 0))))  # noqa: S314
            numbers = [int(e.text or 0) for e in doc.iter() if e.tag.endswith("PartNumber")]
            stored = self.root / "data" / q["uploadId"][0]
            stored.parent.mkdir(parents=True, exist_ok=True)
            parts_dir.rename(stored)
            self._publish(bucket, key, [stored / str(n) for n in numbers])
            body = f"<CompleteMultipartUploadResult><Key>{key}</Key><ETag>\"x-{len(numbers)}\"</ETag>" \
                   "</CompleteMultipartUploadResult>"
            self._reply(200, body.encode(), {"Content-Type": "application/xml"})
        else:
            self._error(501, "NotImplemented")

    def do_PUT(self) -> None:
        if not self._authorized():
            return
        bucket, key, q = self._target()
        if "uploadId" in q and "partNumber" in q:  # UploadPart
            parts_dir = self.root / "uploads" / q["uploadId"][0]
            if not parts_dir.is_dir():
                self._error(404, "NoSuchUpload")
                return
            etag = self._body_to(parts_dir / str(int(q["partNumber"][0])))
            self._reply(200, headers={"ETag": f'"{etag}"'})
        elif not q:  # PutObject
            data = self.root / "data" / secrets.token_hex(16)
            data.parent.mkdir(parents=True, exist_ok=True)
            etag = self._body_to(data)
            self._publish(bucket, key, [data])
            self._reply(200, headers={"ETag": f'"{etag}"'})
        else:
            self._error(501, "NotImplemented")

    def do_DELETE(self) -> None:
        if not self._authorized():
            return
        bucket, key, q = self._target()
        if "uploadId" in q:  # AbortMultipartUpload
            shutil.rmtree(self.root / "uploads" / q["uploadId"][0], ignore_errors=True)
        else:
            self._drop(bucket, key)
        self._reply(204)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        index = self._object(*self._target()[:2])
        if not index.is_file():
            self._error(404, "NoSuchKey")
            return
        files = [Path(f) for f in json.loads(index.read_text())]
        self.send_response(200)
        self.send_header("Content-Length", str(sum(f.stat().st_size for f in files)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "GET":
            for f in files:
                with f.open("rb") as fh:
                    shutil.copyfileobj(fh, self.wfile, CHUNK)

    do_HEAD = do_GET  # noqa: N815


def main() -> None:
    root, port, access_key = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    root.mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"root": root, "access_key": access_key})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
