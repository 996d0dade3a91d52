"""The benches' checking S3 endpoint (odoo_stack_ops/sandbox/s3_checking.py) answers as Spaces does: HTTPS with
its throwaway CA, SigV4 checked, part sizes and the part list checked on completion."""

from __future__ import annotations

import botocore.exceptions
import pytest

from odoo_stack_ops.backup.spaces import client
from odoo_stack_ops.sandbox.s3_checking import MIN_PART, CheckingS3


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with CheckingS3(tmp_path_factory.mktemp("s3c")) as endpoint:
        endpoint.create_bucket("checked")
        yield endpoint


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_objects_round_trip_over_https_with_its_ca(s3):
    c = s3.client()
    s3.reset_requests()
    c.put_object(Bucket="checked", Key="a/b.txt", Body=b"hello")
    assert c.get_object(Bucket="checked", Key="a/b.txt")["Body"].read() == b"hello"
    assert [o["Key"] for o in c.list_objects_v2(Bucket="checked", Prefix="a/")["Contents"]] == ["a/b.txt"]
    assert s3.requests().get("PutObject") == 1


def test_a_wrong_secret_is_refused(s3):
    wrong = client(s3.spaces_config("checked", secret_key="not-the-secret"))
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        wrong.put_object(Bucket="checked", Key="x", Body=b"x")
    assert code(exc) == "SignatureDoesNotMatch"


def test_multipart_parts_are_checked_on_completion(s3):
    c = s3.client()
    up = c.create_multipart_upload(Bucket="checked", Key="big")["UploadId"]
    small = c.upload_part(Bucket="checked", Key="big", UploadId=up, PartNumber=1, Body=b"s" * 1024)["ETag"]
    last = c.upload_part(Bucket="checked", Key="big", UploadId=up, PartNumber=2, Body=b"t")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        c.complete_multipart_upload(Bucket="checked", Key="big", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": small}, {"PartNumber": 2, "ETag": last}]})
    assert code(exc) == "EntityTooSmall"
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        c.complete_multipart_upload(Bucket="checked", Key="big", UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]})
    assert code(exc) == "InvalidPart"
    first = c.upload_part(Bucket="checked", Key="big", UploadId=up, PartNumber=1, Body=b"s" * MIN_PART)["ETag"]
    c.complete_multipart_upload(Bucket="checked", Key="big", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": last}]})
    assert c.head_object(Bucket="checked", Key="big")["ContentLength"] == MIN_PART + 1
