"""The streamed multipart writer against a real S3 endpoint (moto's server): parts, hashes, abort."""

from __future__ import annotations

import hashlib
import random

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
