"""Light curves assembled from raw packets without a database (what `bench features` runs on)."""
from pipeline.offline.packets import frames_from_packets
from tests.conftest import require_shared
from tests.packets import expected_rows


def test_frames_hold_each_detection_and_limit_once_with_corrections():
    folder = require_shared("ztf_alerts")
    candids, limits, _ = expected_rows(folder)
    detections, non_detections, objects = frames_from_packets(p.read_bytes() for p in sorted(folder.glob("*.avro")))
    assert sorted(detections["candid"]) == sorted(candids)
    assert len(non_detections) == len(limits)
    assert {"magpsf_corr", "corrected", "dubious"} <= set(detections.columns)
    assert sorted(objects["oid"]) == sorted(detections["oid"].unique())
    assert (objects.set_index("oid")["ndet"] == detections.groupby("oid").size()).all()
