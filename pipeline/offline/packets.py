"""Light curves as DataFrames straight from Avro packets (no database): for benchmarks and tests."""
import pandas as pd

from pipeline.steps.correction import correct_objects
from pipeline.steps.magstats import object_stats
from pipeline.surveys.ztf import BadAlert, parse_packet


def frames_from_packets(packets):
    """(corrected detections, non-detections, objects) of raw packets; each object's light curve is
    the union of what its packets carry (detections by candid, limits by (fid, mjd)). Packets the
    adapter refuses are left out, as ingest quarantines them."""
    detections, limits = {}, {}
    for data in packets:
        try:
            alerts = parse_packet(data)
        except BadAlert:
            continue
        for alert in alerts:
            for det in alert.prv_detections:
                detections.setdefault(det["candid"], det)
            detections[alert.candid] = alert.detection
            for nd in alert.non_detections:
                limits.setdefault((nd["oid"], nd["fid"], nd["mjd"]), nd)
    det = pd.DataFrame(list(detections.values()))
    nd = pd.DataFrame(list(limits.values()), columns=["oid", "fid", "mjd", "diffmaglim", "parent_candid"])
    corrected, flags = correct_objects(det)
    objects = object_stats(corrected, flags)
    return corrected, nd, objects
