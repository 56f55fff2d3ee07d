"""The contract every raw-archive backend keeps (local folder, S3): one check, run on each."""
import pytest

from pipeline.ingest.storage import ArchiveMissing, alert_key

# Bytes that would break any text round trip: NUL, high bytes, CR/LF, an Avro magic.
PAYLOAD = b"Obj\x01\x00\xff\xfe\r\n" + bytes(range(256)) * 64


def check_round_trip(archive):
    """save / exists / load / overwrite / delete (twice) / missing key, byte for byte; returns the key."""
    key = alert_key(1234567890123)
    assert not archive.exists(key)
    archive.save(key, PAYLOAD)
    assert archive.exists(key)
    assert archive.load(key) == PAYLOAD
    archive.save(key, b"replaced")
    assert archive.load(key) == b"replaced"
    archive.save(key, PAYLOAD)
    return key


def check_delete(archive, key):
    archive.delete(key)
    assert not archive.exists(key)
    archive.delete(key)  # idempotent
    with pytest.raises(ArchiveMissing) as info:
        archive.load(key)
    assert isinstance(info.value, KeyError)
