"""Issue 27, item 11: the archive's disk fills up during an ingest (SQLite and PostgreSQL).

The archive is the production ``LocalArchive``; only its file system is made small: once a byte
budget is spent, a write raises the error a full disk raises (OSError ENOSPC), after the partial
file, as the kernel does, has been removed by ``LocalArchive.save`` itself."""
import errno
import os

import pytest
from django.core.management import CommandError, call_command

from pipeline.ingest import runner
from pipeline.ingest.storage import LocalArchive
from pipeline.models import Detection, Object, RawAlert
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


class SmallDisk(LocalArchive):
    """A local archive on a disk with ``free`` bytes left."""

    def __init__(self, root, free):
        super().__init__(root, max_workers=1)
        self.free = free

    def save(self, key, data):
        if len(data) > self.free:
            full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            original = os.fdopen

            def short_write(fd, *args, **kwargs):  # the write itself fails, inside LocalArchive.save
                handle = original(fd, *args, **kwargs)
                handle.write = lambda _data: (_ for _ in ()).throw(full)
                return handle

            os.fdopen = short_write
            try:
                return super().save(key, data)
            finally:
                os.fdopen = original
        self.free -= len(data)
        return super().save(key, data)


def _archived(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_full_disk_stops_with_the_summary_and_leaves_no_orphan(broker_env, monkeypatch, capsys):
    folder = require_shared("ztf_alerts_2018")
    files = sorted(folder.glob("*.avro"))[:60]
    root = broker_env / "small_disk"
    sizes = [p.stat().st_size for p in files]
    disk = SmallDisk(root, free=sum(sizes[:25]) + sizes[25] // 2)  # full in the middle of the 2nd batch
    monkeypatch.setattr(runner, "archive", lambda: disk)

    with pytest.raises(CommandError) as info:
        call_command("ingest", *map(str, files), "--batch-size", "20", "--no-pipeline", "--no-progress")
    message = str(info.value)
    assert "the archive's disk is full" in message and "No space left on device" in message
    assert "ingest the same paths again" in message
    out = capsys.readouterr().out
    assert "Ingest summary" in out and "alerts read          20" in out and "batches              1" in out
    # the first batch is stored whole; the second was rolled back and its packets removed
    assert RawAlert.objects.count() == 20
    stored = sorted(RawAlert.objects.values_list("archive_key", flat=True))
    assert sorted(disk.path(key).relative_to(root).as_posix() for key in stored) == _archived(root)
    assert not list(root.rglob(".tmp-*"))

    # space freed: the same paths again store the rest, nothing twice
    disk.free = 10**9
    call_command("ingest", *map(str, files), "--batch-size", "20", "--no-pipeline", "--no-progress")
    assert RawAlert.objects.count() == 60 == len(_archived(root))
    assert Object.objects.count() == len({r for r in RawAlert.objects.values_list("oid", flat=True)})
    assert Detection.objects.filter(has_stamp=True).count() == 60
