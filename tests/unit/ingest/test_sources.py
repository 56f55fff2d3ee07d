"""Where packets come from, under hostile conditions: pipes, oversized files, links in archives,
and the bounds on what one input or one batch holds in memory."""
import hashlib
import io
import os
import tarfile
import threading

from pipeline.ingest.sources import Limits, Missing, Packet, Skipped, SourceProblem, batched, iter_packets
from pipeline.ingest.storage import QUARANTINE_PREFIX_BYTES, digest_stream


def _no_hang(path):
    """Unblock a reader of the pipe at ``path`` after a while (the test then fails instead of hanging)."""
    timer = threading.Timer(60, lambda: open(path, "wb").close())
    timer.start()
    return timer


def test_a_named_pipe_given_as_a_path_is_a_problem_not_a_hang(tmp_path):
    pipe = tmp_path / "alerts.avro"
    os.mkfifo(pipe)
    timer = _no_hang(pipe)
    try:
        (item,) = list(iter_packets([pipe]))
    finally:
        timer.cancel()
    assert isinstance(item, SourceProblem) and item.reason == "not a regular file (named pipe): not read"


def test_a_pipe_named_like_an_archive_is_not_opened_as_one(tmp_path):
    pipe = tmp_path / "ztf_public_20250101.tar.gz"
    os.mkfifo(pipe)
    timer = _no_hang(pipe)
    try:
        items = list(iter_packets([tmp_path]))
    finally:
        timer.cancel()
    assert items == [SourceProblem(str(pipe), "not a regular file (named pipe): not read")]


def test_special_files_with_other_names_in_a_folder_are_reported_as_skipped(tmp_path):
    os.mkfifo(tmp_path / "notes.txt")
    (tmp_path / "1.avro").write_bytes(b"x")
    items = list(iter_packets([tmp_path]))
    assert items == [Skipped(str(tmp_path / "notes.txt"), "named pipe: not read"), Packet(str(tmp_path / "1.avro"), b"x")]


def test_an_oversized_file_is_not_read_into_memory_and_keeps_a_prefix_with_size_and_digest(tmp_path):
    big = tmp_path / "big.avro"
    payload = os.urandom(3 * QUARANTINE_PREFIX_BYTES + 5)
    big.write_bytes(payload)
    (item,) = list(iter_packets([big], Limits(max_packet_bytes=2 * QUARANTINE_PREFIX_BYTES)))
    assert isinstance(item, SourceProblem) and "exceeds the 2097152-byte limit" in item.reason
    assert item.data == payload[:QUARANTINE_PREFIX_BYTES]
    assert item.size == len(payload) and item.sha256 == hashlib.sha256(payload).hexdigest()


def test_links_and_special_members_of_an_archive_are_reported(tmp_path):
    night = tmp_path / "night.tar"
    with tarfile.open(night, "w") as tar:
        info = tarfile.TarInfo("1.avro")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("2.avro")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        fifo = tarfile.TarInfo("3.avro")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    items = list(iter_packets([night]))
    assert items == [
        Packet(f"{night}:1.avro", b"abc"),
        Skipped(f"{night}:2.avro", "archive member is a link: not followed"),
        Skipped(f"{night}:3.avro", "archive member is a special file: not followed"),
    ]


def test_a_missing_path_and_a_dangling_link_are_missing(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "link.avro")
    assert list(iter_packets([tmp_path / "nothing", tmp_path / "link.avro"])) == [
        Missing(str(tmp_path / "nothing")), Missing(str(tmp_path / "link.avro"), "dangling symbolic link"),
    ]


def test_batches_are_bounded_in_bytes_as_well_as_in_count():
    items = [Packet(str(i), bytes(400)) for i in range(10)]
    assert [len(b) for b in batched(items, 4, max_bytes=1000)] == [3, 3, 3, 1]
    assert [len(b) for b in batched(items, 4, max_bytes=10**6)] == [4, 4, 2]


def test_digest_stream_reads_in_chunks_and_keeps_the_prefix():
    data = os.urandom(10_000)
    assert digest_stream(io.BytesIO(data), keep=100, chunk=333) == (data[:100], 10_000, hashlib.sha256(data).hexdigest())


def test_the_adapter_limits_match_the_columns():
    """What the ZTF adapter refuses as too long or out of range is exactly what the columns cannot hold."""
    from django.db import models as m

    from pipeline import models
    from pipeline.surveys import ztf

    tables = (models.Detection, models.ForcedPhotometry, models.Ps1, models.Gaia, models.SolarSystem, models.Object)
    for name, limit in ztf.STRING_LIMITS.items():
        table = models.RawAlert if name == "publisher" else next(t for t in tables if _has(t, name))
        assert table._meta.get_field(name).max_length == limit, name
    for name in ztf.INT32_FIELDS:
        for table in tables:
            if _has(table, name):
                assert type(table._meta.get_field(name)) is m.IntegerField, (table, name)
    for name in ztf.INT64_FIELDS:
        for table in tables:
            if _has(table, name):
                assert type(table._meta.get_field(name)) is m.BigIntegerField, (table, name)
    assert models.Object._meta.get_field("oid").max_length >= len("ZTFSIM25abcdefg")
    for key in ztf.DETECTION_KEYS:  # every other copied value lands in a float column
        field = models.Detection._meta.get_field(key)
        if key not in ztf.STRING_LIMITS and key not in ztf.INT32_FIELDS and key not in ztf.INT64_FIELDS:
            assert isinstance(field, (m.FloatField, m.BigIntegerField, m.SmallIntegerField, m.BooleanField,
                                      m.ForeignKey)), key


def _has(table, name):
    try:
        table._meta.get_field(name)
    except Exception:
        return False
    return True
