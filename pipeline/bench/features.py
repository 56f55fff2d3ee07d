"""`bench features`: light-curve features on simulated, real-packet and labeled light curves, per
alert on a replayed night, and the recovery of catalogue periods (ours and ALeRCE's own values)."""
import time

import fastavro
import numpy as np
import pandas as pd
from django.conf import settings

from pipeline.offline.packets import frames_from_packets
from pipeline.simulation.night import simulate_packets
from pipeline.steps.features import benchmark, compute_features


def demo_night(n_objects):
    return frames_from_packets(data for _, data in simulate_packets(n_objects, seed=3))


def real_packets():
    folder = settings.SHARED_DATA_DIR / "ztf_alerts"
    return frames_from_packets(p.read_bytes() for p in sorted(folder.glob("*.avro"))) if folder.exists() else None


def labeled_curves(min_points=20, max_points=200):
    """BTS SN Ia and ALeRCE periodic-star light curves of 20-200 points (no rb given: rb set to 1)."""
    parts = []
    bts = settings.SHARED_DATA_DIR / "labeled" / "bts_snia" / "lightcurves.csv"
    if bts.exists():
        lc = pd.read_csv(bts).rename(columns={"mag": "magpsf", "magerr": "sigmapsf"})
        parts.append(lc[["oid", "mjd", "fid", "magpsf", "sigmapsf"]].assign(rb=1.0))
    periodic = settings.SHARED_DATA_DIR / "labeled" / "alerce_periodic25" / "detections.csv"
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


def replayed_night(batch_size):
    """The real packets in time order, cut into batches of ``batch_size`` alerts: the feature step's
    input batch by batch (each object with the light curve its packets carry)."""
    folder = settings.SHARED_DATA_DIR / "ztf_alerts"
    if not folder.exists():
        return None
    packets = []
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fh:
            jd = next(fastavro.reader(fh))["candidate"]["jd"]
        packets.append((jd, path.read_bytes()))
    packets.sort(key=lambda item: item[0])
    data = [d for _, d in packets]
    return [frames_from_packets(data[i:i + batch_size]) for i in range(0, len(data), batch_size)], len(data)


DETECTION_CLASSES = ((1, 2), (3, 5), (6, None))


def bench_replayed_night(out, batch_size, repeat=3):
    night = replayed_night(batch_size)
    if night is None:
        out.write("replayed night: skipped (../shared/data absent)")
        return
    batches, n_alerts = night
    for frames in batches[:1]:
        compute_features(*frames)  # warm-up
    best = None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        for frames in batches:
            compute_features(*frames)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        best = (cpu, wall) if best is None or cpu < best[0] else best
    counts = pd.concat([frames[0].groupby("oid").size() for frames in batches])
    out.write(f"replayed night ({n_alerts} real alerts in time order, batches of {batch_size}; "
              f"{100 * (counts <= 2).mean():.0f}% of the objects have 1-2 detections): "
              f"{1e3 * best[0] / n_alerts:.2f} ms CPU per alert ({n_alerts / best[0]:.0f} alerts per CPU-second; "
              f"wall {1e3 * best[1] / n_alerts:.2f} ms)")
    det, nd, objects = real_packets()
    sizes = det.groupby("oid").size()
    for low, high in DETECTION_CLASSES:
        chosen = sizes[(sizes >= low) & ((sizes <= high) if high else True)].index
        if not len(chosen):
            continue
        result = benchmark(det[det["oid"].isin(chosen)], nd[nd["oid"].isin(chosen)],
                           objects[objects["oid"].isin(chosen)], repeat=repeat)
        groups = ", ".join(f"{group} {ms:.3f}" for group, ms in result["ms_per_object_per_group"].items())
        label = f"{low}-{high}" if high else f"{low}+"
        out.write(f"    objects with {label:>4} detections ({len(chosen):3d}): {result['objects_per_cpu_s']:6.0f} "
                  f"objects per CPU-second; ms per object: {groups}")


def _alias(found, catalogue):
    for name, ratio in (("P", 1.0), ("2P", 2.0), ("P/2", 0.5)):
        if abs(found / (catalogue * ratio) - 1) < 0.01:
            return name
    return "other"


def period_recovery():
    """Catalogue period vs Multiband_period, ours and ALeRCE's own (its extractor's output), for every
    star of ../shared/data/labeled/alerce_periodic25 with a catalogue period: a table of counts."""
    reference = settings.SHARED_DATA_DIR / "labeled" / "alerce_extractor_reference"
    labels_path = settings.SHARED_DATA_DIR / "labeled" / "alerce_periodic25" / "labels.csv"
    if not (reference.exists() and labels_path.exists()):
        return None
    labels = pd.read_csv(labels_path).set_index("oid")
    labels = labels[labels["period"].notna()]
    det = pd.read_csv(reference / "detections.csv")
    det = det[det["oid"].isin(labels.index)].assign(candid=lambda d: np.arange(len(d)))
    objects = pd.read_csv(reference / "objects.csv")[["oid", "corrected"]].assign(stellar=True)
    ours = compute_features(det, None, objects[objects["oid"].isin(labels.index)]).values["Multiband_period"]
    alerce = pd.read_csv(reference / "alerce_features.csv").set_index("oid")["Multiband_period"]
    rows = {}
    for name, found in (("ours", ours), ("ALeRCE (its extractor)", alerce)):
        kinds = pd.Series([_alias(found[oid], labels.loc[oid, "period"]) for oid in labels.index])
        rows[name] = {kind: int((kinds == kind).sum()) for kind in ("P", "2P", "P/2", "other")}
    return pd.DataFrame(rows).T, len(labels)


def run_feature_bench(out, opts):
    from threadpoolctl import threadpool_limits

    datasets = [("simulated demo night", lambda: demo_night(opts["objects"])),
                ("real ZTF packets (../shared/data)", real_packets),
                ("labeled light curves, 20-200 points", labeled_curves)]
    with threadpool_limits(1):
        out.write("objects/s: CPU time of this process (one thread), then the wall clock (which other load slows); "
                  "ms per object: CPU time")
        for label, load in datasets:
            frames = load()
            if frames is None:
                out.write(f"{label}: skipped (../shared/data absent)")
                continue
            det, nd, objects = frames
            points = det.groupby("oid").size()
            result = benchmark(det, nd, objects, repeat=opts["repeat"])
            out.write(
                f"{label}: {result['objects']} objects, median {points.median():.0f} detections "
                f"-> {result['objects_per_cpu_s']:.0f} objects per CPU-second ({result['objects_per_s']:.0f}/s wall) "
                f"on one core ({result['features']} features, {100 * result['missing_fraction']:.0f}% missing)"
            )
            for group, ms in sorted(result["ms_per_object_per_group"].items(), key=lambda kv: -kv[1]):
                rate = f"{1000 / ms:9.0f} objects/s" if ms > 0 else ""
                out.write(f"    {group:<12} {ms:7.3f} ms/object {rate}")
        bench_replayed_night(out, opts["batch_size"], repeat=opts["repeat"])
        recovery = period_recovery()
        if recovery is None:
            out.write("period recovery: skipped (../shared/data absent)")
        else:
            table, n = recovery
            out.write(f"period recovery on the {n} labeled periodic stars with a catalogue period "
                      f"(Multiband_period within 1% of P, 2P, P/2):\n{table.to_string()}")
