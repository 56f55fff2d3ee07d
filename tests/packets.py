"""Independent counts of what real packets hold, straight from fastavro (to check the adapter and ingest)."""
import fastavro


def same_night(prv):
    """A history row's jd lies within a day of the night its pid encodes (night id = pid // 1e9, counted
    from JD 2457754.5). Some rebroadcast packets break this (every prv jd set to one value); the adapter
    drops those rows."""
    start = 2457754.5 + prv["pid"] // 10**9
    return start - 1 <= prv["jd"] < start + 2


def expected_rows(folder):
    """Unique detections, upper limits and forced-photometry epochs, counted straight from the
    packets with fastavro."""
    candids, limits, forced = set(), set(), set()
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                candids.add(record["candid"])
                for fp in record.get("fp_hists") or []:
                    forced.add((record["objectId"], fp["fid"], fp["jd"]))
                for prv in record.get("prv_candidates") or []:
                    if not same_night(prv):
                        continue
                    if prv.get("candid") is not None:
                        candids.add(prv["candid"])
                    elif prv.get("diffmaglim") is not None:
                        limits.add((record["objectId"], prv["fid"], prv["jd"]))
    return candids, limits, forced
