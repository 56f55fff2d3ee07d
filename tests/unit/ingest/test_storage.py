"""The local raw-alert archive and the archive helpers (no network, no Django)."""
import hashlib
import os

import pytest

from pipeline.ingest.storage import ArchiveMissing, LocalArchive, S3Archive, alert_key, get_archive, quarantine_key
from tests.archive_contract import PAYLOAD, check_delete, check_round_trip


@pytest.fixture
def archive(tmp_path):
    return LocalArchive(tmp_path / "archive")


def test_alert_and_quarantine_keys():
    assert alert_key(1234567890123) == "ztf/1234567890123.avro"
    assert alert_key("42") == "ztf/42.avro"
    assert alert_key(7, survey="lsst") == "lsst/7.avro"
    for bad in (-1, 1.5, "abc", True):
        with pytest.raises((ValueError, TypeError)):
            alert_key(bad)
    digest = hashlib.sha256(b"broken packet").hexdigest()
    assert quarantine_key(digest) == f"quarantine/{digest}.bin"
    assert quarantine_key(digest.upper()) == f"quarantine/{digest}.bin"
    with pytest.raises(ValueError):
        quarantine_key("not-a-digest")


def test_round_trip(archive):
    check_delete(archive, check_round_trip(archive))


def test_missing_key_raises_typed_keyerror(archive):
    with pytest.raises(ArchiveMissing) as info:
        archive.load("ztf/1.avro")
    assert isinstance(info.value, KeyError)
    assert info.value.key == "ztf/1.avro"


def test_save_many_and_keys(archive):
    items = [(alert_key(c), PAYLOAD + str(c).encode()) for c in range(100, 130)]
    items.append((quarantine_key("a" * 64), b"bad"))
    assert archive.save_many(iter(items)) == len(items)
    for key, data in items:
        assert archive.load(key) == data
    ztf = list(archive.keys("ztf/"))
    assert ztf == sorted(k for k, _ in items if k.startswith("ztf/"))
    assert list(archive.keys("ztf/12")) == [alert_key(c) for c in range(120, 130)]
    assert list(archive.keys("quarantine/")) == [quarantine_key("a" * 64)]
    assert sorted(archive.keys()) == sorted(k for k, _ in items)
    assert list(archive.keys("nothing/")) == []


def test_files_fan_out_and_no_temp_files_left(archive):
    keys = [alert_key(c) for c in range(1000, 1400)]
    archive.save_many((k, b"x") for k in keys)
    folders = {archive.path(k).parent for k in keys}
    assert len(folders) > 300  # spread over hashed leaf folders, not one directory
    for k in keys:
        path = archive.path(k)
        assert path.name == k.rpartition("/")[2]
        assert path.relative_to(archive.root).parts[0] == "ztf"
    leftovers = [n for _, _, names in os.walk(archive.root) for n in names if n.startswith(".")]
    assert leftovers == []


def test_failed_write_leaves_old_object_and_no_temp(archive, monkeypatch):
    key = alert_key(5)
    archive.save(key, b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        archive.save(key, b"new")
    monkeypatch.undo()
    assert archive.load(key) == b"old"
    assert [n for n in os.listdir(archive.path(key).parent)] == ["5.avro"]


@pytest.mark.parametrize("bad", ["", "/abs/key", "a/../b", "a//b", "./a", "a\\b"])
def test_rejects_unsafe_keys(archive, bad):
    with pytest.raises(ValueError):
        archive.save(bad, b"x")


def test_get_archive_local(tmp_path):
    folder = get_archive(str(tmp_path / "a"))
    assert isinstance(folder, LocalArchive) and folder.root == tmp_path / "a"
    url = get_archive((tmp_path / "b").as_uri())
    assert isinstance(url, LocalArchive) and url.root == tmp_path / "b"
    url.save("ztf/1.avro", b"1")
    assert get_archive((tmp_path / "b").as_uri()).load("ztf/1.avro") == b"1"
    with pytest.raises(ValueError):
        get_archive("gs://bucket/prefix")


def test_get_archive_s3_endpoint_from_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("ALERT_ARCHIVE_S3_ENDPOINT", "http://127.0.0.1:9")
    archive = get_archive("s3://alerts/raw/ztf/")
    assert isinstance(archive, S3Archive)
    assert (archive.bucket, archive.prefix) == ("alerts", "raw/ztf")
    assert archive.client.meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.delenv("ALERT_ARCHIVE_S3_ENDPOINT")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:10")
    assert get_archive("s3://alerts").client.meta.endpoint_url == "http://127.0.0.1:10"
    assert get_archive("s3://alerts").prefix == ""
