"""Hostile input and unlucky operators (issue 19), on SQLite and PostgreSQL alike: crafted packets
built from real ones, Avro and gzip bombs, named pipes, unreadable files, links, missing paths, and
copies of a candid that disagree (issue 13's conflict rule)."""
import copy
import hashlib
import io
import math
import os
import shutil
import tarfile
import tempfile
import threading
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import fastavro
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from pipeline import backends
from pipeline.ingest.runner import ingest_paths
from pipeline.ingest.sources import Limits
from pipeline.ingest.storage import QUARANTINE_PREFIX_BYTES
from pipeline.models import Detection, Object, Quarantine, RawAlert
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


# ------------------------------------------------------------------------------ helpers
def _real_packets():
    out = []
    for path in sorted(require_shared("ztf_alerts").glob("*.avro")):
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            out.append((path, reader.writer_schema, next(reader)))
    return out


@pytest.fixture(scope="module")
def real():
    return _real_packets()


def _with_history(real, n=3):
    """A real packet (path, schema, record) of schema 4.02 whose history holds >= n detections of its night."""
    for path, schema, rec in real:
        dets = [p for p in rec["prv_candidates"] or [] if p["candid"] is not None]
        if rec["schemavsn"] == "4.02" and len(dets) >= n and rec["publisher"].startswith("ZTF"):
            return path, schema, rec
    pytest.skip("no real packet with enough history")


def _write(path, schema, records, codec="null"):
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    path.write_bytes(out.getvalue())
    return path


def _crafted(rec, **changes):
    """A deep copy of a record with top-level and candidate (``cand_``) values changed."""
    rec = copy.deepcopy(rec)
    for key, value in changes.items():
        if key.startswith("cand_"):
            rec["candidate"][key[5:]] = value
        else:
            rec[key] = value
    if "candid" in changes:
        rec["candidate"]["candid"] = changes["candid"]
    return rec


def _reasons():
    return {q.source.rsplit("/", 1)[-1]: q.reason for q in Quarantine.objects.all()}


@contextmanager
def _not_root():
    """Run as an unprivileged user, so that a file's permissions bind (root reads anything)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@contextmanager
def _refusing_trigger(event, oid):
    """A real database fault: a trigger that refuses ``event`` (INSERT/UPDATE) of ``oid``'s detections."""
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute("CREATE FUNCTION i19_refuse() RETURNS trigger AS $$ BEGIN "
                           "RAISE EXCEPTION 'refused by a test trigger'; END $$ LANGUAGE plpgsql")
            cursor.execute(f"CREATE TRIGGER i19_refuse BEFORE {event} ON detection FOR EACH ROW "
                           f"WHEN (NEW.oid = '{oid}') EXECUTE FUNCTION i19_refuse()")
        else:
            cursor.execute(f"CREATE TRIGGER i19_refuse BEFORE {event} ON detection WHEN NEW.oid = '{oid}' "
                           "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER i19_refuse" + (" ON detection" if postgres else ""))
            if postgres:
                cursor.execute("DROP FUNCTION i19_refuse()")


@pytest.fixture
def open_archive(settings):
    """An archive folder that any user may write (the unreadable-file test drops root)."""
    root = tempfile.mkdtemp(prefix="i19-archive-")
    os.chmod(root, 0o777)
    settings.ALERT_ARCHIVE_URL = root
    backends.archive.cache_clear()
    yield root
    backends.archive.cache_clear()
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------ one bad input never costs its batch
def test_each_bad_input_is_quarantined_and_its_batch_mates_stored(broker_env, open_archive, real):
    night = Path(tempfile.mkdtemp(prefix="i19-night-", dir=open_archive))  # a folder an unprivileged user can enter
    os.chmod(night, 0o755)
    good = real[:3]
    for path, schema, rec in good:
        _write(night / path.name, schema, [rec])
    path, schema, rec = real[3]
    base = rec["candid"]
    long_a = "ZTF20" + "a" * 27 + "tail-one"  # two ids longer than the column, same first 32 characters
    long_b = "ZTF20" + "a" * 27 + "tail-two"
    bad = {
        "negative_candid.avro": _crafted(rec, candid=-base),
        "long_oid_a.avro": _crafted(rec, objectId=long_a, candid=base + 101),
        "long_oid_b.avro": _crafted(rec, objectId=long_b, candid=base + 102),
        "ra_inf.avro": _crafted(rec, candid=base + 103, cand_ra=math.inf),
        "dec_off_sky.avro": _crafted(rec, candid=base + 104, cand_dec=91.0),
        "long_rbversion.avro": _crafted(rec, candid=base + 105, cand_rbversion="t" * 17),
    }
    for name, record in bad.items():
        _write(night / name, schema, [record])
    os.mkfifo(night / "pipe.avro")
    unreadable = _write(night / "unreadable.avro", *real[4][1:2], [real[4][2]])
    os.chmod(unreadable, 0)

    # Were the pipe ever opened for reading, this writer would unblock it after a while (and the
    # assertions below fail) rather than leave the test hanging.
    watchdog = threading.Timer(120, lambda: open(night / "pipe.avro", "wb").close())
    watchdog.start()
    try:
        with _not_root():
            summary = ingest_paths([night], batch_size=100, pipeline=False, progress=False)
    finally:
        watchdog.cancel()

    assert RawAlert.objects.count() == len(good) == summary.alerts_read - len(bad)
    assert set(RawAlert.objects.values_list("candid", flat=True)) == {r["candid"] for _, _, r in good}
    reasons = _reasons()
    expected = {
        "negative_candid.avro": "not a positive 64-bit integer",
        "long_oid_a.avro": "is not a ZTF id",
        "long_oid_b.avro": "is not a ZTF id",
        "ra_inf.avro": "infinite value in required field candidate.ra",
        "dec_off_sky.avro": "off the sky",
        "long_rbversion.avro": "rbversion is 17 characters long",
        "pipe.avro": "not a regular file (named pipe)",
        "unreadable.avro": "cannot read the file: Permission denied",
    }
    assert set(reasons) == set(expected), reasons
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    assert summary.quarantined == Quarantine.objects.count() == len(expected)
    assert not Object.objects.filter(oid__startswith="ZTF20aaaa").exists()
    assert not summary.failed

    again = ingest_paths([night], batch_size=100, pipeline=False, progress=False)
    assert Quarantine.objects.count() == len(expected) and again.quarantined == len(expected) - 1  # root reads it now


def test_a_batch_that_fails_in_the_database_is_split_until_the_bad_input_stands_alone(broker_env, real):
    """A fault no parse check foresees (here a trigger that refuses one object's detections): the
    batch is split, the one input is quarantined with the database's error, the others are stored."""
    folder = broker_env / "batch"
    folder.mkdir()
    for path, schema, rec in real[:5]:
        _write(folder / path.name, schema, [rec])
    victim = real[2][2]["objectId"]
    with _refusing_trigger("INSERT", victim):
        summary = ingest_paths([folder], batch_size=10, pipeline=False, progress=False)
    assert RawAlert.objects.count() == 4 and not RawAlert.objects.filter(oid=victim).exists()
    (q,) = Quarantine.objects.all()
    assert q.reason.startswith("ingest failed:") and "refused by a test trigger" in q.reason
    assert q.source.endswith(real[2][0].name) and summary.quarantined == 1 and summary.batches == 1


# ------------------------------------------------------------------------------ bounded memory and disk
class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as they are read (the bomb is never whole in the test's memory)."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _zeros_digest(size):
    digest, block = hashlib.sha256(), bytes(2**20)
    for _ in range(size // len(block)):
        digest.update(block)
    return digest.hexdigest()


def _add(tar, name, data=None, size=None):
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    tar.addfile(info, io.BytesIO(data) if data is not None else _Zeros(size))


def test_a_gzip_tar_bomb_streams_through_bounded_memory_and_a_bounded_quarantine(broker_env, real):
    bomb_size = 256 * 2**20
    night = broker_env / "ztf_public_20250102.tar.gz"
    with tarfile.open(night, "w:gz") as tar:
        _add(tar, f"{real[0][0].name}", real[0][0].read_bytes())
        _add(tar, "bomb.avro", size=bomb_size)
        _add(tar, f"{real[1][0].name}", real[1][0].read_bytes())
    assert night.stat().st_size < 2 * 2**20  # a small file ...

    tracemalloc.start()
    try:
        summary = ingest_paths([night], batch_size=50, pipeline=False, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 48 * 2**20, peak  # ... that expands to 256 MiB, never held whole
    assert RawAlert.objects.count() == 2 and summary.alerts_read == 2
    (q,) = Quarantine.objects.all()
    assert q.source.endswith(":bomb.avro") and "exceeds the 8388608-byte limit" in q.reason
    assert q.size == bomb_size and q.sha256 == _zeros_digest(bomb_size)
    kept = backends.archive().load(q.archive_key)
    assert kept == bytes(QUARANTINE_PREFIX_BYTES)  # a bounded prefix, not 256 MiB
    assert summary.quarantined == 1


def test_an_archive_over_the_night_cap_stops_and_says_where(broker_env, real):
    night = broker_env / "ztf_public_20250103.tar.gz"
    with tarfile.open(night, "w:gz") as tar:
        for path, _, _ in real[:6]:
            _add(tar, path.name, path.read_bytes())
    sizes = [path.stat().st_size for path, _, _ in real[:6]]
    limits = Limits(max_night_bytes=sum(sizes[:4]))
    summary = ingest_paths([night], batch_size=50, pipeline=False, progress=False, limits=limits)
    assert RawAlert.objects.count() == 4 == summary.alerts_read
    (q,) = Quarantine.objects.all()
    assert "archive expands to more than" in q.reason and f"{real[4][0].name!r} after 4 alerts" in q.reason


def test_an_avro_bomb_is_one_quarantine_entry_and_a_two_record_bad_file_is_counted_once(broker_env, real):
    folder = broker_env / "bombs"
    folder.mkdir()
    _write(folder / "million.avro", {"type": "int"}, [0] * 1_000_000, codec="deflate")
    path, schema, rec = real[0]
    _write(folder / "two_bad.avro", schema, [
        _crafted(rec, objectId="ZTF20<script>"), _crafted(rec, candid=rec["candid"] + 11, cand_ra=math.inf),
    ])
    _write(folder / "good.avro", schema, [real[1][2]])
    summary = ingest_paths([folder], batch_size=50, pipeline=False, progress=False)
    reasons = _reasons()
    assert set(reasons) == {"million.avro", "two_bad.avro"}
    assert reasons["million.avro"].startswith("Avro container holds more than 100 records")
    assert "is not a ZTF id" in reasons["two_bad.avro"] and "infinite value" in reasons["two_bad.avro"]
    assert summary.quarantined == Quarantine.objects.count() == 2
    assert RawAlert.objects.count() == 1


# ------------------------------------------------------------------------------ nothing taken over silently
def test_a_copied_history_takes_nothing_and_the_rows_both_carry_are_stored_for_neither(broker_env, real):
    path, schema, victim = _with_history(real)
    victim_dets = {p["candid"] for p in victim["prv_candidates"] if p["candid"] is not None} | {victim["candid"]}
    folder = broker_env / "takeover"
    folder.mkdir()
    _write(folder / "victim.avro", schema, [victim])
    first = ingest_paths([folder / "victim.avro"], batch_size=50, pipeline=False, progress=False)
    stored = set(Detection.objects.filter(oid=victim["objectId"]).values_list("candid", flat=True))
    assert stored and stored <= victim_dets and first.conflicts == 0
    history = stored - {victim["candid"]}

    # A crafted packet of another object at the victim's position, carrying the victim's history and
    # its own alert's candid. The history rows lie at both objects' position and are the own alert of
    # neither: stored for neither (as in every other order, issue 27); the victim's own alert stays.
    thief = _crafted(victim, objectId="ZTF20thiefaa", candid=victim["candid"] + 13)
    own_row = {k: victim["candidate"].get(k) for k in thief["prv_candidates"][0]}
    thief["prv_candidates"] = list(thief["prv_candidates"]) + [dict(own_row, candid=victim["candid"])]
    _write(folder / "thief.avro", schema, [thief])
    summary = ingest_paths([folder / "thief.avro"], batch_size=50, pipeline=False, progress=False)

    assert list(Detection.objects.filter(oid=victim["objectId"]).values_list("candid", flat=True)) == [victim["candid"]]
    assert list(Detection.objects.filter(oid="ZTF20thiefaa").values_list("candid", flat=True)) == [thief["candid"]]
    assert summary.conflicts == 2 * len(history) + 1
    contested = Quarantine.objects.filter(reason__contains="histories of several objects")
    assert sorted(contested.values_list("candid", "oid")) == sorted(
        [(c, victim["objectId"]) for c in history] + [(c, "ZTF20thiefaa") for c in history])
    (q,) = Quarantine.objects.filter(reason__contains=f"stored under {victim['objectId']}")
    assert q.source.endswith("thief.avro") and q.oid == "ZTF20thiefaa" and q.candid == victim["candid"]
    assert summary.quarantined == Quarantine.objects.count() == 2 * len(history) + 1

    again = ingest_paths([folder], batch_size=50, pipeline=False, progress=False)
    assert Quarantine.objects.count() == 2 * len(history) + 1 and again.conflicts == 0  # nothing new
    assert Detection.objects.count() == 2


def test_in_one_batch_the_object_whose_own_alert_it_is_wins(broker_env, real):
    path, schema, victim = _with_history(real)
    folder = broker_env / "same_batch"
    folder.mkdir()
    thief = _crafted(victim, objectId="ZTF20thiefbb", candid=victim["candid"] + 17)
    own_row = {k: victim["candidate"].get(k) for k in thief["prv_candidates"][0]}
    thief["prv_candidates"] = [dict(own_row, candid=victim["candid"], magpsf=own_row["magpsf"] + 1)]
    _write(folder / "a_thief.avro", schema, [thief])  # read first
    _write(folder / "b_victim.avro", schema, [victim])
    summary = ingest_paths([folder], batch_size=50, pipeline=False, progress=False)
    det = Detection.objects.get(candid=victim["candid"])
    assert det.oid_id == victim["objectId"] and det.magpsf == pytest.approx(victim["candidate"]["magpsf"])
    assert summary.conflicts == 1 and "is the own alert of " + victim["objectId"] in _reasons()["a_thief.avro"]


def test_a_second_copy_of_an_alert_with_different_content_is_a_recorded_conflict(broker_env, real):
    path, schema, rec = real[0]
    folder = broker_env / "copies"
    folder.mkdir()
    _write(folder / "original.avro", schema, [rec])
    _write(folder / "same_again.avro", schema, [rec])
    ingest_paths([folder / "original.avro"], batch_size=50, pipeline=False, progress=False)
    before = Detection.objects.get(candid=rec["candid"]).magpsf
    _write(folder / "altered.avro", schema, [_crafted(rec, cand_magpsf=rec["candidate"]["magpsf"] + 0.5)])
    for _ in range(2):
        summary = ingest_paths([folder / "altered.avro", folder / "same_again.avro"], batch_size=50,
                               pipeline=False, progress=False)
        assert (summary.conflicts, summary.duplicates_skipped, summary.quarantined) == (1, 1, 1)
    assert Detection.objects.get(candid=rec["candid"]).magpsf == before
    (q,) = Quarantine.objects.all()
    assert q.source.endswith("altered.avro") and "different content (magpsf" in q.reason and q.candid == rec["candid"]


def _two_alerts_of_one_object(real):
    """(older, newer) real packets of one object, the newer one's history holding the older's candid."""
    by_candid = {rec["candid"]: (path, schema, rec) for path, schema, rec in real}
    for path, schema, rec in real:
        for prv in rec["prv_candidates"] or []:
            older = by_candid.get(prv["candid"])
            if older and older[2]["objectId"] == rec["objectId"] and rec["publisher"].startswith("ZTF"):
                return older, (path, schema, rec)
    pytest.skip("no object with two linked real packets")


@pytest.mark.parametrize("order", ["own_first", "history_first"])
def test_the_own_alerts_copy_wins_whatever_the_order(broker_env, real, order):
    (o_path, o_schema, older), (n_path, n_schema, newer) = _two_alerts_of_one_object(real)
    newer = copy.deepcopy(newer)
    row = next(p for p in newer["prv_candidates"] if p["candid"] == older["candid"])
    row["magpsf"] += 0.3  # the history copy disagrees with the alert itself
    folder = broker_env / order
    folder.mkdir()
    own = _write(folder / "own.avro", o_schema, [older])
    history = _write(folder / "history.avro", n_schema, [newer])
    runs = [own, history] if order == "own_first" else [history, own]
    conflicts = sum(ingest_paths([p], batch_size=50, pipeline=False, progress=False).conflicts for p in runs)
    det = Detection.objects.get(candid=older["candid"])
    assert det.magpsf == pytest.approx(older["candidate"]["magpsf"]) and det.parent_candid == older["candid"]
    assert det.has_stamp is True
    assert conflicts == 1 and Quarantine.objects.count() == 1


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_between_two_history_copies_the_newer_alerts_wins_whatever_the_order(broker_env, real, order):
    path, schema, rec = _with_history(real)
    row = next(p for p in rec["prv_candidates"] if p["candid"] is not None)
    later = _crafted(rec, candid=rec["candid"] + 19)
    next(p for p in later["prv_candidates"] if p["candid"] == row["candid"])["magpsf"] += 0.3
    folder = broker_env / order
    folder.mkdir()
    old = _write(folder / "old.avro", schema, [rec])
    new = _write(folder / "new.avro", schema, [later])
    runs = [old, new] if order == "old_first" else [new, old]
    conflicts = sum(ingest_paths([p], batch_size=50, pipeline=False, progress=False).conflicts for p in runs)
    assert Detection.objects.get(candid=row["candid"]).magpsf == pytest.approx(row["magpsf"] + 0.3)
    assert conflicts == 1


def test_of_two_copies_in_one_packet_the_one_in_its_night_is_kept(broker_env, real):
    path, schema, rec = _with_history(real)
    rec = copy.deepcopy(rec)
    row = next(p for p in rec["prv_candidates"] if p["candid"] is not None)
    stray = dict(row, jd=row["jd"] + 0.5, magpsf=row["magpsf"] + 1)  # same candid, in daylight
    rec["prv_candidates"] = [stray] + list(rec["prv_candidates"])
    _write(broker_env / "twice.avro", schema, [rec])
    ingest_paths([broker_env / "twice.avro"], batch_size=50, pipeline=False, progress=False)
    det = Detection.objects.get(candid=row["candid"])
    assert det.magpsf == pytest.approx(row["magpsf"]) and det.mjd == pytest.approx(row["jd"] - 2400000.5)


# ------------------------------------------------------------------------------ reporting
def test_missing_paths_fail_the_command_and_links_are_reported(broker_env, real):
    folder = broker_env / "linked"
    folder.mkdir()
    _write(folder / "good.avro", real[0][1], [real[0][2]])
    os.symlink(real[1][0], folder / "linked_packet.avro")  # a link to a file is read
    os.symlink(broker_env, folder / "loop")  # a link to a folder is not followed
    os.symlink(broker_env / "nowhere.avro", folder / "dangling.avro")
    missing = broker_env / "no_such_night.tar.gz"
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 missing path"):
        call_command("ingest", str(folder), str(missing), "--no-pipeline", "--no-progress", stdout=out)
    text = out.getvalue()
    assert RawAlert.objects.count() == 2
    assert "skipped              2" in text
    assert f"{folder / 'loop'}: symbolic link to a folder: not followed" in text
    assert f"{folder / 'dangling.avro'}: dangling symbolic link" in text
    assert f"{missing}: no such file or folder" in text
    assert not Quarantine.objects.exists()
    call_command("ingest", str(folder), "--no-pipeline", "--no-progress", stdout=io.StringIO())  # no error


def test_failed_steps_fail_the_command(broker_env, real):
    folder = broker_env / "steps"
    folder.mkdir()
    for path, schema, rec in real[:2]:
        _write(folder / path.name, schema, [rec])
    out = io.StringIO()
    with _refusing_trigger("UPDATE", real[0][2]["objectId"]):  # the correction step's write fails
        with pytest.raises(CommandError, match="steps failed in 1 batch"):
            call_command("ingest", str(folder), "--no-progress", stdout=out)
    assert "steps failed in 1 batch(es):" in out.getvalue() and RawAlert.objects.count() == 2


def test_the_command_takes_the_packet_limit(broker_env, real):
    path = _write(broker_env / "one.avro", real[0][1], [real[0][2]])
    call_command("ingest", str(path), "--no-pipeline", "--no-progress", "--max-packet-bytes", "1000",
                 stdout=io.StringIO())
    (q,) = Quarantine.objects.all()
    assert "exceeds the 1000-byte limit" in q.reason and q.size == path.stat().st_size
    assert not RawAlert.objects.exists()
