"""The S3 archive against a real S3 API served locally (moto in server mode, HTTP on 127.0.0.1).

boto3 talks HTTP to the server exactly as it would to AWS or MinIO: no patched clients.
"""
import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from pipeline.ingest.storage import ArchiveMissing, S3Archive, alert_key, get_archive, quarantine_key
from tests.archive_contract import PAYLOAD, check_delete, check_round_trip  # noqa: E402


@pytest.fixture
def archive(s3_endpoint, bucket):
    return S3Archive(bucket, "raw/v1", endpoint_url=s3_endpoint, region="us-east-1")


def test_round_trip(archive, s3_endpoint, bucket):
    key = check_round_trip(archive)
    # Stored under the prefix, byte for byte, as seen by an independent client.
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket=bucket, Key=f"raw/v1/{key}")["Body"].read()
    assert raw == PAYLOAD
    check_delete(archive, key)


def test_missing_key(archive):
    with pytest.raises(ArchiveMissing) as info:
        archive.load(alert_key(1))
    assert isinstance(info.value, KeyError)
    assert not archive.exists(alert_key(1))


def test_save_many_and_keys(archive):
    items = [(alert_key(c), PAYLOAD[: c % 500] + str(c).encode()) for c in range(1000, 1040)]
    items.append((quarantine_key("b" * 64), b"bad packet"))
    assert archive.save_many(items) == len(items)
    for key, data in items:
        assert archive.load(key) == data
    assert list(archive.keys("ztf/")) == sorted(k for k, _ in items if k.startswith("ztf/"))
    assert list(archive.keys("ztf/101")) == [alert_key(c) for c in range(1010, 1020)]
    assert list(archive.keys("quarantine/")) == [quarantine_key("b" * 64)]
    assert sorted(archive.keys()) == sorted(k for k, _ in items)


def test_keys_paginate(archive):
    n = 1005  # more than one list_objects_v2 page (1000 keys)
    archive.save_many((alert_key(c), b"x") for c in range(n))
    assert sorted(archive.keys("ztf/")) == sorted(alert_key(c) for c in range(n))


def test_get_archive_reads_endpoint_from_environment(s3_endpoint, bucket, monkeypatch):
    monkeypatch.setenv("ALERT_ARCHIVE_S3_ENDPOINT", s3_endpoint)
    archive = get_archive(f"s3://{bucket}/from-url")
    archive.save(alert_key(9), PAYLOAD)
    assert archive.load(alert_key(9)) == PAYLOAD
    assert list(S3Archive(bucket, endpoint_url=s3_endpoint).keys()) == [f"from-url/{alert_key(9)}"]
