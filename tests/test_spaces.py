"""The streamed multipart writer against a real S3 endpoint (moto's server): parts, hashes, abort."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

import pytest

from odoo_stack_ops.backup import spaces

MIB = 1 << 20

pytestmark = pytest.mark.integration


def test_parts_from_uneven_writes_store_exactly_what_was_written(s3, bucket):
    client = s3.client()
    rnd = random.Random(3)
    writes = [rnd.randbytes(rnd.randint(1, 900_000)) for _ in range(40)]  # ~18 MB in uneven pieces
    with spaces.MultipartWriter(client, bucket, "db/x.dump.zst", part_size=5 * MIB) as w:
        for data in writes:
            w.write(data)
        w.write(bytearray(b"tail from a bytearray"))  # copied: the caller may reuse its buffer
        up = w.close()
    whole = b"".join(writes) + b"tail from a bytearray"
    assert (up.size, up.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    assert up.parts == 3
    assert spaces.get_bytes(client, bucket, "db/x.dump.zst") == whole
    sizes = [client.head_object(Bucket=bucket, Key="db/x.dump.zst", PartNumber=n)["ContentLength"]
             for n in range(1, up.parts + 1)]
    assert all(5 * MIB <= s < 5 * MIB + 900_000 for s in sizes[:-1])  # a part overshoots by at most one write
    assert 0 < sizes[-1] < 5 * MIB and sum(sizes) == len(whole)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_error_while_writing_aborts_the_upload(s3, bucket):
    client = s3.client()
    with pytest.raises(RuntimeError, match="pg_dump died"), \
            spaces.MultipartWriter(client, bucket, "db/y.dump.zst", part_size=5 * MIB) as w:
        w.write(random.Random(4).randbytes(12 * MIB))  # two parts already sent
        raise RuntimeError("pg_dump died")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_an_empty_stream_is_one_empty_object(s3, bucket):
    client = s3.client()
    with spaces.MultipartWriter(client, bucket, "empty") as w:
        up = w.close()
    assert (up.size, up.parts) == (0, 1) and spaces.get_bytes(client, bucket, "empty") == b""


class RealInitiated:
    """The moto client, except that listed uploads carry the time they were really created: moto's server
    reports every upload as initiated on 2010-11-10T20:48:33Z (moto/s3/responses.py). Aborts go to moto."""

    def __init__(self, client):
        self.client, self.created = client, {}

    def create(self, bucket, key, when):
        upload = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        self.created[upload] = when
        return upload

    def get_paginator(self, name):
        return self

    def paginate(self, **kw):  # list_multipart_uploads only
        for page in self.client.get_paginator("list_multipart_uploads").paginate(**kw):
            for up in page.get("Uploads", []):
                up["Initiated"] = self.created.get(up["UploadId"], up["Initiated"])
            yield page

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_only_uploads_older_than_grace_are_aborted(s3, bucket):
    """A crashed run's upload (49 h old) goes; a concurrent run's, still writing (1 h old), stays and completes."""
    client = RealInitiated(s3.client())
    now, grace = datetime.now(UTC), timedelta(hours=48)
    crashed = client.create(bucket, "p/db/odoo_core/crashed.dump.zst", now - timedelta(hours=49))
    writing = client.create(bucket, "p/db/odoo_core/writing.dump.zst", now - timedelta(hours=1))
    elsewhere = client.create(bucket, "other-stack/db/x.dump.zst", now - timedelta(days=9))

    assert spaces.abort_stale_uploads(client, bucket, "p/", grace, now=now) == ["p/db/odoo_core/crashed.dump.zst"]
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]}
    assert left == {writing, elsewhere} and crashed not in left  # another prefix is not ours to clean
    part = client.upload_part(Bucket=bucket, Key="p/db/odoo_core/writing.dump.zst", UploadId=writing, PartNumber=1,
                              Body=b"still writing")
    client.complete_multipart_upload(Bucket=bucket, Key="p/db/odoo_core/writing.dump.zst", UploadId=writing,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert spaces.get_bytes(client, bucket, "p/db/odoo_core/writing.dump.zst") == b"still writing"
    # the default is 48 h: moto's own (fixed, 2010) dates, 1 h after them and long after
    (initiated,) = {u["Initiated"] for u in s3.client().list_multipart_uploads(Bucket=bucket)["Uploads"]}
    assert spaces.abort_stale_uploads(s3.client(), bucket, "other-stack/", now=initiated + timedelta(hours=1)) == []
    assert spaces.abort_stale_uploads(s3.client(), bucket, "other-stack/") == ["other-stack/db/x.dump.zst"]
