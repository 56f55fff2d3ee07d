"""Independent counts of what real packets hold, straight from fastavro (to check the adapter and ingest)."""
from collections import defaultdict

import fastavro


def same_night(prv):
    """A row's jd lies in the dark part of the night its pid encodes (night id = pid // 1e9, counted
    from JD 2457754.5; the Sun is below Palomar's horizon from 0.028 to 0.622 of that UTC day) and
    within a minute of the time of day the pid's next six digits give (millionths of a day)."""
    start = 2457754.5 + prv["pid"] // 10**9
    exposure = start + prv["pid"] % 10**9 // 1000 / 1e6
    return start <= prv["jd"] < start + 0.65 and abs(prv["jd"] - exposure) * 86400 <= 60


def refused_packets(folder):
    """Names of the packets whose own candidate's jd is not its exposure's (refused whole)."""
    out = set()
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fh:
            if any(not same_night(record["candidate"]) for record in fastavro.reader(fh)):
                out.add(path.name)
    return out


def fill_jds(prvs):
    """jds that rows of different exposures (pids) share: a rebroadcaster's fill value."""
    pids = defaultdict(set)
    for prv in prvs:
        pids[prv["jd"]].add(prv["pid"])
    return {jd for jd, p in pids.items() if len(p) > 1}


def expected_rows(folder):
    """Unique detections, upper limits and forced-photometry epochs, counted straight from the
    packets with fastavro."""
    candids, limits, forced, _ = _rows(folder)
    return candids, limits, forced


def contested_candids(folder):
    """candids that the histories of several objects claim, none of them its own alert (stored for
    none, in every order)."""
    return _rows(folder)[3]


def _rows(folder):
    candids, limits, forced = set(), set(), set()
    claimed_by, own = defaultdict(set), set()
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                if not same_night(record["candidate"]):
                    continue  # refused whole
                candids.add(record["candid"])
                own.add(record["candid"])
                for fp in record.get("fp_hists") or []:
                    forced.add((record["objectId"], fp["fid"], fp["jd"]))
                prvs = record.get("prv_candidates") or []
                fill = fill_jds(prvs)
                for prv in prvs:
                    if prv["jd"] in fill or not same_night(prv):
                        continue
                    if prv.get("candid") is not None:
                        candids.add(prv["candid"])
                        claimed_by[prv["candid"]].add(record["objectId"])
                    elif prv.get("diffmaglim") is not None:
                        limits.add((record["objectId"], prv["fid"], prv["jd"]))
    contested = {c for c, oids in claimed_by.items() if len(oids) > 1 and c not in own}
    return candids, limits, forced, contested
