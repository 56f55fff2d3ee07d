"""Training of the light-curve classifier (``manage.py train_lc_classifier``): data, split, fit,
scores, artefacts and model card. No Django.

Data: real ZTF light curves of transients (``../shared/data/labeled``: BTS SNe Ia, BTS transients,
Type I SLSNe) plus SIMULATED light curves (:mod:`pipeline.simulation.lightcurves`) of the stochastic and
periodic classes, which have no real light curves here. Features come from the pipeline's own
feature code, so the model sees what the pipeline stores. The held-out part is real wherever real
data exist; ALeRCE's labeled SNe (``alerce_sne30``) and periodic stars (``alerce_periodic25``) are
never trained on and are scored through :func:`pipeline.offline.lightcurves.classify_lightcurves`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.offline import lightcurves as lc_files
from pipeline.simulation import lightcurves as simulate_lightcurves
from pipeline.steps import lc_classifier as lcc
from pipeline.steps.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.steps.outliers import BranchOutliers
from pipeline.training.plots import confusion_png

MODEL_VERSION = "hrf-1.0.0"
PERIODIC25_CLASSES = {"Ceph": "CEP", "EA": "E", "RRL": "RRL", "LPV": "LPV", "DSCT": "DSCT"}
# Milky Way extinction the SLSN catalogue removed (its README): A_g, A_r per unit E(B-V)
SLSN_EXTINCTION = {1: 3.75, 2: 2.68}


@dataclass
class TrainingConfig:
    seed: int = 0
    n_estimators: int = 250
    max_depth: int | None = None
    simulated_per_class: int = 300
    simulated_cv_nova: int = 300
    held_out_fraction: float = 0.3
    jobs: int = 2
    outlier_trees: int = 100


@dataclass
class Dataset:
    detections: pd.DataFrame
    non_detections: pd.DataFrame
    objects: pd.DataFrame  # oid, class, corrected, stellar, label_source, test_only
    notes: list = field(default_factory=list)


def _bts(folder, labels=None):
    det = pd.read_csv(folder / "lightcurves.csv")
    det = det.rename(columns={"mag": "magpsf", "magerr": "sigmapsf"}).drop(columns=["band"])
    det["isdiffpos"] = "t"  # BTS photometry of a brightening transient: positive differences
    if labels is None:
        labels = pd.DataFrame({"oid": pd.unique(det["oid"]), "class": "SNIa"})
    return det, labels[["oid", "class"]]


def load_real(data_dir: Path) -> Dataset:
    """The labeled real light curves usable here, in ALeRCE's class names."""
    labeled = Path(data_dir) / "labeled"
    dets, nds, objs, notes = [], [], [], []

    det, lab = _bts(labeled / "bts_snia")
    dets.append(det)
    objs.append(lab.assign(label_source="real: BTS SNe Ia (bts_snia)", test_only=False))

    labels = pd.read_csv(labeled / "bts_transients" / "labels.csv")
    kept = labels[labels["class"].isin(lcc.CLASSES)]
    notes.append(f"bts_transients: {len(labels) - len(kept)} objects of non-ALeRCE classes left out "
                 f"({', '.join(sorted(set(labels['class']) - set(lcc.CLASSES)))})")
    det, lab = _bts(labeled / "bts_transients", kept)
    dets.append(det[det["oid"].isin(kept["oid"])])
    objs.append(lab.assign(label_source="real: BTS transients (bts_transients)", test_only=False))

    slsn = labeled / "slsn_ztf"
    labels = pd.read_csv(slsn / "labels.csv")
    ebv = labels.set_index("oid")["ebv_mw"]
    det = pd.read_csv(slsn / "lightcurves.csv").rename(columns={"mag": "magpsf", "magerr": "sigmapsf"})
    det = det.drop(columns=["band"]).assign(isdiffpos="t")
    nd = pd.read_csv(slsn / "nondetections.csv")
    for frame, column in ((det, "magpsf"), (nd, "diffmaglim")):  # undo the catalogue's dereddening
        frame[column] = frame[column] + frame["oid"].map(ebv).fillna(0) * frame["fid"].map(SLSN_EXTINCTION)
    dets.append(det)
    objs.append(labels[["oid", "class"]].assign(label_source="real: Type I SLSNe (slsn_ztf)", test_only=False))
    nds.append((nd, objs[-1]))

    sne = labeled / "alerce_sne30"
    det = lc_files.normalise_detections(pd.read_csv(sne / "detections.csv", low_memory=False))
    det = det.drop(columns=["magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext", "corrected"])
    dets.append(det[["oid", "mjd", "fid", "magpsf", "sigmapsf", "isdiffpos", "rb"]])
    labels = pd.read_csv(sne / "labels.csv").rename(columns={"objectId": "oid", "classALeRCE": "class"})
    objs.append(labels.assign(label_source="real: ALeRCE labeled SNe (alerce_sne30)", test_only=True))
    nds.append((lc_files.normalise_non_detections(pd.read_csv(sne / "non_detections.csv", low_memory=False)),
                objs[-1]))

    per = labeled / "alerce_periodic25"
    det = pd.read_csv(per / "detections.csv")
    det["sigmapsf_corr_ext"] = det["sigmapsf_corr"]
    # no isdiffpos in this set: brighter than the band's median (the reference) counts as positive
    median = det.groupby(["oid", "fid"])["magpsf_corr"].transform("median")
    det["isdiffpos"] = np.where(det["magpsf_corr"] <= median, "t", "f")
    dets.append(det)
    labels = pd.read_csv(per / "labels.csv").rename(columns={"classALeRCE": "class"})
    labels["class"] = labels["class"].map(PERIODIC25_CLASSES)
    objs.append(labels[["oid", "class"]].assign(
        label_source="real: ALeRCE labeled periodic stars (alerce_periodic25)", test_only=True))

    objects = pd.concat(objs, ignore_index=True)
    # ALeRCE's own labeled objects are test-only wherever else they appear
    test_oids = set(objects.loc[objects["test_only"], "oid"])
    f150 = labeled / "alerce_features150" / "labels.csv"
    if f150.exists():
        test_oids |= set(pd.read_csv(f150)["oid"])
    overlap = objects["oid"].isin(test_oids) & ~objects["test_only"]
    if overlap.any():
        notes.append(f"{int(overlap.sum())} BTS/SLSN objects also in ALeRCE's labeled sets left out of training")
    objects = objects[~overlap].drop_duplicates("oid")
    # each source's detections for its own objects only (an oid can be in two sources)
    def own(frame, source):
        return frame[frame["oid"].isin(source.loc[~source["oid"].isin(test_oids) | source["test_only"], "oid"])]

    detections = pd.concat([own(d, o) for d, o in zip(dets, objs)], ignore_index=True)
    flags = lc_files.object_flags(detections, use_corrected=True).set_index("oid")
    objects = objects.assign(corrected=objects["oid"].map(flags["corrected"]).fillna(False).astype(bool))
    objects["stellar"] = objects["corrected"]
    detections = lc_files.normalise_detections(detections)
    non_detections = pd.concat([own(n, o) for n, o in nds], ignore_index=True)
    return Dataset(detections, non_detections, objects, notes)


def load_simulated(config: TrainingConfig) -> Dataset:
    counts = {cls: config.simulated_per_class for cls in simulate_lightcurves.CLASSES}
    counts["CV/Nova"] = config.simulated_cv_nova
    det, nd, objects = simulate_lightcurves.simulate(counts, seed=config.seed)
    return Dataset(det, nd, objects.assign(test_only=False))


def split(objects: pd.DataFrame, fraction, seed) -> np.ndarray:
    """Boolean 'held out' per object: ``fraction`` of each (class, real/simulated) group, seeded;
    test-only objects are always held out."""
    rng = np.random.default_rng(seed)
    held = objects["test_only"].to_numpy(bool).copy()
    simulated = objects["label_source"].eq(simulate_lightcurves.SIMULATED)
    for _, rows in objects[~objects["test_only"]].groupby([objects["class"], simulated]).groups.items():
        rows = np.asarray(objects.index.get_indexer(rows))
        n_out = int(round(fraction * len(rows)))
        if len(rows) >= 3:
            held[rng.permutation(rows)[:n_out]] = True
    return held


def _metrics(true, predicted, labels):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(true, predicted, labels=labels, zero_division=0)
    table = pd.DataFrame({"precision": p, "recall": r, "f1": f, "n": n}, index=labels)
    return table, confusion_matrix(true, predicted, labels=labels)


def evaluate(model, values, objects) -> dict:
    """Scores of ``model`` on the held-out objects that pass the gate (real and simulated apart)."""
    rows, probabilities, left_out = lcc.classify(model, values.loc[objects["oid"]])
    scored = objects.set_index("oid").loc[probabilities["top"].index] if probabilities else objects.iloc[:0]
    out = {"n_held_out": len(objects), "n_below_gate": len(left_out)}
    if not probabilities:
        return out
    branch_true = scored["class"].map(lcc.BRANCH_OF).to_numpy()
    branch_pred = probabilities["top"].idxmax(axis=1).to_numpy()
    class_pred = probabilities["classes"].idxmax(axis=1).to_numpy()
    real = ~scored["label_source"].eq(simulate_lightcurves.SIMULATED).to_numpy()
    out["predictions"] = pd.DataFrame({"oid": scored.index, "class": scored["class"].to_numpy(),
                                       "source": scored["label_source"].to_numpy(), "branch_pred": branch_pred,
                                       "class_pred": class_pred})
    for name, mask in (("all", np.ones(len(real), bool)), ("real", real), ("simulated", ~real)):
        if not mask.any():
            continue
        top, top_cm = _metrics(branch_true[mask], branch_pred[mask], list(lcc.BRANCHES))
        classes, class_cm = _metrics(scored["class"].to_numpy()[mask], class_pred[mask], list(lcc.CLASSES))
        out[name] = {"n": int(mask.sum()), "top_accuracy": float(np.mean(branch_true[mask] == branch_pred[mask])),
                     "class_accuracy": float(np.mean(scored["class"].to_numpy()[mask] == class_pred[mask])),
                     "top": top, "classes": classes, "top_cm": top_cm, "class_cm": class_cm}
    return out


def score_files(model, dataset: Dataset, oids, jobs) -> dict:
    """Real labeled curves never trained on, scored as an astronomer would: classify_lightcurves."""
    det = dataset.detections[dataset.detections["oid"].isin(oids)]
    nd = dataset.non_detections[dataset.non_detections["oid"].isin(oids)]
    rows, left_out = lc_files.classify_lightcurves(model, det, nd, jobs=jobs, use_corrected=True)
    truth = dataset.objects.set_index("oid")["class"]
    best = rows[rows["ranking"] == 1]
    top = best[best["classifier_name"] == "lc_classifier_top"].set_index("oid")["class_name"]
    cls = best[best["classifier_name"] == "lc_classifier"].set_index("oid")["class_name"]
    frame = pd.DataFrame({"class": truth.loc[top.index], "branch_pred": top, "class_pred": cls.loc[top.index]})
    return {"scored": frame, "below_gate": left_out, "n": len(oids)}


def score_alerce_vectors(model, data_dir):
    """ALeRCE's own 178-feature vectors of real labeled objects (alerce_objects98), scored as stored
    features: a check of the simulated stochastic/periodic training against real objects."""
    folder = Path(data_dir) / "labeled" / "alerce_objects98"
    if not (folder / "features.csv").exists():
        return pd.DataFrame()
    values = pd.read_csv(folder / "features.csv").set_index("objectId")
    labels = pd.read_csv(folder / "labels.csv").set_index("objectId")["classALeRCE"]
    _, wide, left_out = lcc.classify(model, values)
    if not wide:
        return pd.DataFrame()
    oids = wide["top"].index
    frame = pd.DataFrame({"class": labels.reindex(oids).to_numpy(), "branch_pred": wide["top"].idxmax(axis=1).to_numpy(),
                          "class_pred": wide["classes"].idxmax(axis=1).to_numpy()}, index=oids)
    return frame[frame["class"].isin(lcc.CLASSES)]


def recall_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per true class: n, fraction in the right branch, fraction in the right class."""
    frame = frame.assign(right_branch=frame["branch_pred"].to_numpy() == frame["class"].map(lcc.BRANCH_OF).to_numpy(),
                         right_class=frame["class_pred"].to_numpy() == frame["class"].to_numpy())
    g = frame.groupby("class")
    return pd.DataFrame({"n": g.size(), "right_branch": g["right_branch"].mean(), "right_class": g["right_class"].mean()})


def train(data_dir, out_dir, config: TrainingConfig, progress=lambda *a, **k: None, log=print):
    """Build data, compute features, fit, score, write the artefacts; returns the summary dict."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    real = load_real(data_dir)
    simulated = load_simulated(config)
    objects = pd.concat([real.objects, simulated.objects], ignore_index=True)
    objects["corrected"] = objects["corrected"].astype(bool)
    objects["stellar"] = objects["stellar"].astype(bool)
    detections = pd.concat([real.detections, simulated.detections], ignore_index=True)
    non_detections = pd.concat([real.non_detections, simulated.non_detections], ignore_index=True)
    timings = {"data": time.perf_counter() - started}
    log(f"{len(objects)} objects ({(objects['label_source'] == 'simulated').sum()} simulated), "
        f"{len(detections)} detections; computing features")

    tick = time.perf_counter()
    train_mask_input = ~objects["test_only"]
    values = lc_files.features(detections, non_detections,
                               objects.loc[train_mask_input, ["oid", "corrected", "stellar"]],
                               jobs=config.jobs, progress=progress)
    timings["features"] = time.perf_counter() - tick

    pool = objects[train_mask_input].reset_index(drop=True)
    gate = lcc.passes_gate(values.loc[pool["oid"], "n_det_1"], values.loc[pool["oid"], "n_det_2"])
    below = pool[~gate]
    pool = pool[gate].reset_index(drop=True)
    held = split(pool, config.held_out_fraction, config.seed)
    train_objects, held_objects = pool[~held], pool[held]

    tick = time.perf_counter()
    feature_list = lcc.model_feature_names(FEATURE_NAMES)
    model = lcc.HierarchicalClassifier(MODEL_VERSION, feature_list, FEATURE_VERSION, n_estimators=config.n_estimators,
                                       max_depth=config.max_depth, random_state=config.seed, n_jobs=config.jobs)
    model.fit(values.loc[train_objects["oid"]], train_objects["class"].to_numpy(),
              progress=lambda level: log(f"fitted {level}"))
    model.n_jobs = 1
    for forest in model.models.values():
        forest.n_jobs = 1
    outliers = BranchOutliers(MODEL_VERSION, feature_list, n_estimators=config.outlier_trees,
                              random_state=config.seed)
    outliers.fit(values.loc[train_objects["oid"]], train_objects["class"].map(lcc.BRANCH_OF).to_numpy())
    timings["fit"] = time.perf_counter() - tick

    held_scores = evaluate(model, values, held_objects)
    test_oids = list(objects.loc[objects["test_only"], "oid"])
    tick = time.perf_counter()
    files = score_files(model, real, test_oids, config.jobs)
    files["alerce_vectors"] = score_alerce_vectors(model, data_dir)
    timings["score_files"] = time.perf_counter() - tick

    model_path = out_dir / "model.joblib"
    lcc.save(model, model_path, outliers)
    timings["total"] = time.perf_counter() - started
    summary = {
        "version": MODEL_VERSION, "feature_version": FEATURE_VERSION, "config": config.__dict__,
        "model_bytes": os.path.getsize(model_path), "timings_s": timings, "notes": real.notes,
        "counts": _counts(objects, train_objects, held_objects, below),
        "held_out": held_scores, "files": files, "outliers": {b: t for b, t in outliers.thresholds.items()},
        "n_features": len(feature_list), "library_versions": model.library_versions,
    }
    write_card(out_dir, summary)
    return summary


def _counts(objects, train_objects, held_objects, below):
    def per(frame):
        return frame.groupby(["class", frame["label_source"].eq("simulated").map({True: "simulated", False: "real"})]
                             ).size()

    table = pd.DataFrame({"train": per(train_objects), "held_out": per(held_objects), "below_gate": per(below)})
    return table.fillna(0).astype(int)


def _md(frame: pd.DataFrame, floatfmt="{:.2f}") -> str:
    header = "| " + " | ".join([frame.index.name or ""] + [str(c) for c in frame.columns]) + " |"
    lines = [header, "|" + "---|" * (len(frame.columns) + 1)]
    for idx, *row in frame.itertuples(name=None):
        idx = " / ".join(idx) if isinstance(idx, tuple) else idx
        cells = [floatfmt.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_card(out_dir: Path, s: dict):
    """MODEL_CARD.md, metrics.json and the two confusion-matrix PNGs."""
    held = s["held_out"]
    figures = {}
    for part in ("all", "real"):
        if part in held:
            confusion_png(held[part]["top_cm"], list(lcc.BRANCHES),
                          f"top level, held out ({part}: {held[part]['n']})", out_dir / f"confusion_top_{part}.png")
            confusion_png(held[part]["class_cm"], list(lcc.CLASSES),
                          f"15 classes, held out ({part}: {held[part]['n']})",
                          out_dir / f"confusion_classes_{part}.png")
            figures[part] = True
    files = s["files"]
    files_summary = recall_summary(files["scored"]) if len(files["scored"]) else pd.DataFrame()
    real = held.get("real", {})
    real_recall = recall_summary(held["predictions"][~held["predictions"]["source"].eq("simulated")])
    snia = real_recall.loc["SNIa"] if "SNIa" in real_recall.index else None
    metrics = {
        "version": s["version"], "feature_version": s["feature_version"], "model_bytes": s["model_bytes"],
        "timings_s": s["timings_s"], "config": s["config"],
        "held_out_real_top_accuracy": real.get("top_accuracy"),
        "held_out_all_top_accuracy": held.get("all", {}).get("top_accuracy"),
        "held_out_simulated_top_accuracy": held.get("simulated", {}).get("top_accuracy"),
        "held_out_real_recall": real_recall.to_dict(orient="index"),
        "alerce_labeled_recall": files_summary.to_dict(orient="index"),
        "alerce_labeled_below_gate": files["below_gate"],
        "outlier_thresholds": s["outliers"],
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    cfg = s["config"]
    counts = s["counts"].copy()
    counts.index.names = ["class", "data"]
    t = s["timings_s"]
    lines = [
        f"# Model card: light-curve classifier `{s['version']}`",
        "",
        "ALeRCE's balanced hierarchical random forest (Sánchez-Sáez et al. 2021, AJ 161, 141): four "
        "imbalanced-learn `BalancedRandomForestClassifier` (top: Periodic / Stochastic / Transient; one per "
        "branch), P(class) = P(branch) x P(class | branch). Classifier names as ALeRCE's: `lc_classifier`, "
        "`lc_classifier_top`, `lc_classifier_transient`, `lc_classifier_stochastic`, `lc_classifier_periodic`.",
        "",
        "**Much of the training data is SIMULATED**: every stochastic and periodic class is trained on simulated "
        "light curves only (`pipeline/simulation/lightcurves.py`, oids `SIMLC...`), because no real labeled "
        "light curves of those classes exist here. The transients are real ZTF light curves.",
        "",
        "## Command",
        "",
        f"`python manage.py train_lc_classifier --seed {cfg['seed']} --trees {cfg['n_estimators']} "
        f"--max-depth {cfg['max_depth'] or 0} --simulated-per-class {cfg['simulated_per_class']} --jobs {cfg['jobs']}` "
        f"(reads `../shared/data/labeled`). Wall time {t['total']:.0f} s (data {t['data']:.0f} s, features "
        f"{t['features']:.0f} s, fit {t['fit']:.0f} s, scoring the ALeRCE sets {t['score_files']:.0f} s) with "
        f"{cfg['jobs']} processes on a shared, loaded 2-core machine.",
        "",
        "## Model",
        "",
        f"- feature set `{s['feature_version']}`; the model reads {s['n_features']} of the 178 stored features "
        "(left out, because the training data cannot supply them: galactic position, rb, sgscore1, the AllWISE "
        "colours, the corrected colours, and the upper-limit features; see `UNUSED_FEATURES` in "
        "`pipeline/steps/lc_classifier.py`); missing values -> -999, as ALeRCE.",
        f"- forests: {cfg['n_estimators']} trees each, max depth {cfg['max_depth'] or 'unlimited'}, criterion entropy, max_features "
        "sqrt (0.2 for the stochastic branch), sampling_strategy all, replacement True. ALeRCE uses 500 trees "
        f"of unlimited depth; this model is cut to keep the artefact small: {s['model_bytes'] / 1e6:.1f} MB "
        "(joblib, xz) for the 4 forests and the 3 isolation forests.",
        f"- gate: >= {lcc.MIN_DETECTIONS} detections in g or in r (features `n_det_1`, `n_det_2`).",
        f"- outliers: one isolation forest per branch ({cfg['outlier_trees']} trees) on the training objects of the "
        "branch; flag above the branch's 99th percentile of training scores: "
        + ", ".join(f"{b} {v:.3f}" for b, v in s["outliers"].items()) + ".",
        f"- libraries: {s['library_versions']}",
        "",
        "## Data per class (objects that pass the gate; real vs simulated)",
        "",
        _md(counts, "{}"),
        "",
        *[f"- {note}" for note in s["notes"]],
        "- bts_snia, bts_transients: ANTARES alert photometry (difference magnitudes), no upper limits; "
        "slsn_ztf: the catalogue's photometry with its Milky Way extinction added back, with upper limits.",
        "",
        "## Held-out scores",
        "",
        f"Held out: {cfg['held_out_fraction']:.0%} of each class, split by object, seeded. Real figures are on real "
        "light curves only; simulated classes can only be scored on simulated curves (optimistic by construction).",
        "",
    ]
    for part in ("real", "simulated", "all"):
        if part not in held:
            continue
        h = held[part]
        lines += [f"### {part} ({h['n']} objects): top-level accuracy {h['top_accuracy']:.3f}, "
                  f"15-class accuracy {h['class_accuracy']:.3f}", "",
                  _md(h["top"].rename_axis("branch")), "", _md(h["classes"][h["classes"]["n"] > 0].rename_axis("class")), ""]
    lines += ["Confusion matrices (rows true, columns predicted, row-normalised): "
              "`confusion_top_real.png`, `confusion_classes_real.png` (real held-out), "
              "`confusion_top_all.png`, `confusion_classes_all.png` (real + simulated held-out).", "",
              "### Real held-out light curves, per class", "", _md(real_recall.rename_axis("class")), ""]
    if snia is not None:
        lines += [f"SNe Ia (real, held out, n={int(snia['n'])}): {snia['right_branch']:.1%} classified Transient "
                  f"(target >= 80%), {snia['right_class']:.1%} SNIa (target >= 60%).", ""]
    lines += ["## ALeRCE's labeled light curves (never trained on), through `classify_lightcurves`", "",
              f"{files['n']} objects (alerce_sne30 SNe with their upper limits; alerce_periodic25 stars with "
              f"their corrected magnitudes); {len(files['below_gate'])} below the gate.", ""]
    if len(files_summary):
        lines += [_md(files_summary.rename_axis("class")), ""]
    vectors = files.get("alerce_vectors")
    if vectors is not None and len(vectors):
        summary = recall_summary(vectors)
        metrics_vectors = summary.to_dict(orient="index")
        lines += ["## ALeRCE's own feature vectors of real objects (alerce_objects98; gate applied)", "",
                  "Real stochastic and periodic objects, with features computed by ALeRCE's extractor (not by this "
                  "pipeline; the feature parity is tested elsewhere): a check of what the simulated training "
                  f"data taught. {len(vectors)} objects; top-level accuracy "
                  f"{float((vectors['branch_pred'] == vectors['class'].map(lcc.BRANCH_OF)).mean()):.2f}.", "",
                  _md(summary.rename_axis("class")), ""]
        (out_dir / "metrics_alerce_vectors.json").write_text(json.dumps(metrics_vectors, indent=1, default=float) + "\n")
    lines += ["## Where it falls short, and why", "", "FILLED_BY_HAND", ""]
    card = out_dir / "MODEL_CARD.md"
    previous = card.read_text() if card.exists() else ""
    marker = "## Where it falls short, and why"
    if marker in previous:  # keep the hand-written discussion
        lines = lines[: lines.index(marker)] + [previous[previous.index(marker):].rstrip("\n"), ""]
    card.write_text("\n".join(lines))
