"""`bench features`: light-curve features on simulated, real-packet and labeled light curves."""

import numpy as np
import pandas as pd

from pipeline.bench import SHARED_DATA
from pipeline.lightcurves import frames_from_packets
from pipeline.simulate import simulate_packets
from pipeline.steps.features import benchmark



def demo_night(n_objects):
    return frames_from_packets(data for _, data in simulate_packets(n_objects, seed=3))


def real_packets():
    folder = SHARED_DATA / "ztf_alerts"
    return frames_from_packets(p.read_bytes() for p in sorted(folder.glob("*.avro"))) if folder.exists() else None


def labeled_curves(min_points=20, max_points=200):
    """BTS SN Ia and ALeRCE periodic-star light curves of 20-200 points (no rb given: rb set to 1)."""
    parts = []
    bts = SHARED_DATA / "labeled" / "bts_snia" / "lightcurves.csv"
    if bts.exists():
        lc = pd.read_csv(bts).rename(columns={"mag": "magpsf", "magerr": "sigmapsf"})
        parts.append(lc[["oid", "mjd", "fid", "magpsf", "sigmapsf"]].assign(rb=1.0))
    periodic = SHARED_DATA / "labeled" / "alerce_periodic25" / "detections.csv"
    if periodic.exists():
        parts.append(pd.read_csv(periodic)[["oid", "mjd", "fid", "magpsf", "sigmapsf", "rb"]])
    if not parts:
        return None
    det = pd.concat(parts, ignore_index=True)
    det = det[det["fid"].isin([1, 2])]
    sizes = det.groupby("oid")["mjd"].transform("size")
    det = det[(sizes >= min_points) & (sizes <= max_points)].reset_index(drop=True)
    det["candid"] = np.arange(len(det))
    det["isdiffpos"] = 1
    for column in ("magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "sgscore1", "distpsnr1"):
        det[column] = np.nan
    det["corrected"] = det["dubious"] = False
    det["ra"] = det["dec"] = np.nan
    objects = pd.DataFrame({"oid": det["oid"].unique(), "corrected": False, "stellar": False})
    empty = pd.DataFrame(columns=["oid", "fid", "mjd", "diffmaglim"])
    return det, empty, objects


def run_feature_bench(out, opts):
    from threadpoolctl import threadpool_limits

    datasets = [("simulated demo night", lambda: demo_night(opts["objects"])),
                ("real ZTF packets (../shared/data)", real_packets),
                ("labeled light curves, 20-200 points", labeled_curves)]
    with threadpool_limits(1):
        for label, load in datasets:
            frames = load()
            if frames is None:
                out.write(f"{label}: skipped (../shared/data absent)")
                continue
            det, nd, objects = frames
            points = det.groupby("oid").size()
            result = benchmark(det, nd, objects, repeat=2)
            out.write(
                f"{label}: {result['objects']} objects, median {points.median():.0f} detections "
                f"-> {result['objects_per_s']:.0f} objects/s on one core ({result['features']} features, "
                f"{100 * result['missing_fraction']:.0f}% missing)"
            )
            for group, ms in sorted(result["ms_per_object_per_group"].items(), key=lambda kv: -kv[1]):
                rate = f"{1000 / ms:9.0f} objects/s" if ms > 0 else ""
                out.write(f"    {group:<12} {ms:7.3f} ms/object {rate}")
