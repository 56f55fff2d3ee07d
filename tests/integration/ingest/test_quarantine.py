"""Every kind of bad input ends in the quarantine with its reason; the good alerts beside it go on."""
import io
import math
import tarfile

import fastavro
import pytest

from pipeline import backends
from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, Quarantine, RawAlert
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


def rewrite(record, schema, **changes):
    """Write ``record`` back with some candidate values changed."""
    candidate = dict(record["candidate"])
    for name, value in changes.items():
        candidate[name] = value
    out = io.BytesIO()
    fastavro.writer(out, schema, [dict(record, candidate=candidate)])
    return out.getvalue()


def drop_candidate_field(record, writer_schema, field):
    """Re-encode ``record`` with ``field`` removed from the candidate schema (an incomplete packet)."""
    import copy

    schema = copy.deepcopy(writer_schema)
    for f in schema["fields"]:
        if f["name"] == "candidate":
            candidate_schema = f["type"]
            candidate_schema["fields"] = [c for c in candidate_schema["fields"] if c["name"] != field]
    candidate = {k: v for k, v in record["candidate"].items() if k != field}
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [dict(record, candidate=candidate)])
    return out.getvalue()


@pytest.fixture
def bad_night(broker_env):
    tmp_path = broker_env
    packets = sorted(require_shared("ztf_alerts").glob("*.avro"))[:3]
    lsst = sorted(require_shared("lsst_alerts", "rubin_v10_0").glob("*.avro"))[0]
    night = tmp_path / "night"
    night.mkdir()
    good = packets[0].read_bytes()
    (night / "good.avro").write_bytes(good)
    (night / "truncated.avro").write_bytes(packets[1].read_bytes()[: len(packets[1].read_bytes()) // 2])
    (night / "corrupt.avro").write_bytes(b"Obj\x01" + bytes(range(256)) * 4)
    (night / "notes.avro").write_text("this is a text file, not an alert\n")
    with open(lsst, "rb") as fh:  # a Rubin packet whose band is none of ugrizy
        reader = fastavro.reader(fh)
        rubin_schema, rubin = reader.writer_schema, next(reader)
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(rubin_schema), [dict(rubin, diaSource=dict(rubin["diaSource"], band="w"))])
    (night / "rubin.avro").write_bytes(out.getvalue())
    with open(packets[2], "rb") as fh:
        reader = fastavro.reader(fh)
        schema, record = reader.writer_schema, next(reader)
    (night / "no_magpsf.avro").write_bytes(drop_candidate_field(record, schema, "magpsf"))
    (night / "nan_ra.avro").write_bytes(rewrite(record, fastavro.parse_schema(schema), ra=math.nan))
    unknown = dict(record, schemavsn="9.99")
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [unknown])
    (night / "unknown_schema.avro").write_bytes(out.getvalue())
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    broken_tar = tmp_path / "ztf_public_20250101.tar.gz"
    with tarfile.open(broken_tar, "w:gz") as tar:
        tar.add(packets[0], arcname="1.avro")
        tar.add(packets[1], arcname="2.avro")
    broken_tar.write_bytes(broken_tar.read_bytes()[:-200])
    return night, empty, broken_tar


EXPECTED = {
    "truncated.avro": "truncated",
    "corrupt.avro": "corrupt",
    "notes.avro": "not an avro",
    "rubin.avro": "band 'w'",
    "no_magpsf.avro": "magpsf",
    "nan_ra.avro": "ra",
    "unknown_schema.avro": "9.99",
}


def test_each_bad_input_is_quarantined_with_its_reason(bad_night):
    night, empty, broken_tar = bad_night
    summary = ingest_paths([night, empty, broken_tar], batch_size=4, progress=False)

    reasons = {q.source: q.reason.lower() for q in Quarantine.objects.all()}
    for name, words in EXPECTED.items():
        source = next((s for s in reasons if s.endswith(name)), None)
        assert source is not None, f"{name} not quarantined; quarantine holds {reasons}"
        assert words in reasons[source], f"{name}: reason {reasons[source]!r} should mention {words!r}"
    assert any(s.endswith("empty_folder") and "no .avro" in r for s, r in reasons.items()), reasons
    assert any("tar.gz" in s and "truncated" in r for s, r in reasons.items()), reasons

    # Bad bytes are kept in the archive beside the reason.
    for q in Quarantine.objects.exclude(size=0):
        assert backends.archive().load(q.archive_key)
    # The good alert (and what the broken archive yielded before it broke off) went on.
    assert RawAlert.objects.count() >= 1
    assert Detection.objects.filter(has_stamp=True).exists()
    assert summary.quarantined == len(EXPECTED) + 2

    again = ingest_paths([night, empty, broken_tar], batch_size=4, progress=False)
    assert Quarantine.objects.count() == len(reasons)
    assert again.quarantined == summary.quarantined
