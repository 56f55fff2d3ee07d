"""`bench classify`: light-curve classifier inference per core, and its per-alert cost on a real night."""
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings

from pipeline.bench.ingest import run_db_stage
from pipeline.offline import lightcurves as lc_files
from pipeline.simulation import lightcurves as simulate_lightcurves
from pipeline.steps import lc_classifier as lcc
from pipeline.steps.features import FEATURE_VERSION


def feature_sample(n_per_class=20, seed=5):
    """Features of simulated variable stars and real BTS transients (the kinds of object the model sees)."""
    det, nd, objects = simulate_lightcurves.simulate({c: n_per_class for c in simulate_lightcurves.CLASSES}, seed)
    parts = [lc_files.features(det, nd, objects[["oid", "corrected", "stellar"]])]
    bts = settings.SHARED_DATA_DIR / "labeled" / "bts_transients" / "lightcurves.csv"
    if bts.exists():
        real = lc_files.normalise_detections(pd.read_csv(bts).drop(columns=["band"]))
        keep = pd.unique(real["oid"])[:200]
        real = real[real["oid"].isin(keep)]
        parts.append(lc_files.features(real, real.iloc[:0][["oid", "mjd", "fid"]].assign(diffmaglim=0.0),
                                       lc_files.object_flags(real)))
    return pd.concat(parts)


def run_classify_bench(stdout, opts):
    model, forests = lcc.load(settings.LC_CLASSIFIER_MODEL)
    for forest in model.models.values():
        forest.n_jobs = 1
    sample = feature_sample()
    n = opts["objects"] if opts["objects"] != 300 else 20000
    values = sample.iloc[np.arange(n) % len(sample)].copy()
    values.index = [f"o{i}" for i in range(n)]
    stdout.write(f"Light-curve classifier {model.version}: {sum(m.n_estimators for m in model.models.values())} trees "
                 f"in 4 forests; {n} objects (features of {len(sample)} simulated and real light curves, repeated); "
                 f"one process (one core)")
    for batch in (300, n):
        rates = []
        for _ in range(opts["repeat"]):
            tick = time.perf_counter()
            for start in range(0, n, batch):
                rows, wide, _ = lcc.classify(model, values.iloc[start:start + batch], FEATURE_VERSION)
            rates.append(n / (time.perf_counter() - tick))
        stdout.write(f"  classify (probabilities + long rows), batches of {batch:>6}: {np.median(rates):8.0f} objects/s")
    tick = time.perf_counter()
    branches = wide["top"].idxmax(axis=1).to_numpy()
    forests.score(values.iloc[-len(branches):], branches)
    stdout.write(f"  outlier scores (3 isolation forests), one batch:      {len(branches) / (time.perf_counter() - tick):8.0f} objects/s")

    folder = settings.SHARED_DATA_DIR / "ztf_alerts"
    if not folder.exists():
        stdout.write("  per-alert cost on a real night: skipped (../shared/data/ztf_alerts absent)")
        return
    packets = sorted(folder.glob("*.avro"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(packets):
            Path(tmp, f"{i:07d}.avro").write_bytes(path.read_bytes())
        result = run_db_stage(tmp, opts["batch_size"], 1, f"sqlite:///{tmp}/bench.sqlite3", None)
    steps = result["steps"]
    total = sum(steps.values())
    stdout.write(f"  replayed real night: {len(packets)} real ZTF alerts into SQLite, batches of {opts['batch_size']}, "
                 f"eager canvas; seconds per batch (median of the first 3 batches) and ms per alert:")
    for step, seconds in steps.items():
        stdout.write(f"      {step:<12} {seconds:7.3f} s  {seconds / opts['batch_size'] * 1000:7.2f} ms/alert"
                     f"  ({100 * seconds / total:4.1f}% of the steps after ingest)")
