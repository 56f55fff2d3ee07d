"""The pipeline benchmark's replayed ids: ZTF-shaped, new, and distinct across copies and objects."""
import re

import fastavro
import pytest

from pipeline.bench.pipeline import renumber_oid, replay
from tests.conftest import require_shared

ZTF_OID = re.compile(r"^ZTF\d{2}[a-z]{7}$")


def test_renumbered_ids_keep_the_ztf_shape_and_differ_per_copy():
    oids = ["ZTF18aaaaaaa", "ZTF18aaaaaab", "ZTF21zzzzzzz"]
    copies = {renumber_oid(oid, k) for oid in oids for k in range(1, 200)}
    assert len(copies) == 3 * 199 and all(ZTF_OID.match(o) for o in copies)
    assert not copies & set(oids)
    assert renumber_oid("ZTF18aaaaaaa", 1) == "ZTF18aaafyyb"  # 104729 = 5*26^3 + 24*26^2 + 24*26 + 1
    assert renumber_oid("ZTF18aaaaaaa", 1)[:5] == "ZTF18"


def test_replayed_packets_are_new_alerts():
    folder = require_shared("ztf_alerts")
    n_real = len(list(folder.glob("*.avro")))
    packets = replay(folder, n_real + 10)
    records = [next(iter(fastavro.reader(__import__("io").BytesIO(p)))) for p in packets]
    candids = [r["candid"] for r in records]
    assert len(set(candids)) == len(packets)
    real = {next(iter(fastavro.reader(open(p, "rb"))))["candid"] for p in folder.glob("*.avro")}
    assert not real & set(candids)
    assert records[0]["objectId"] != records[n_real]["objectId"]
    assert all(r["candidate"]["candid"] == r["candid"] for r in records)
