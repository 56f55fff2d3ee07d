"""ALeRCE's light-curve classifier: a balanced hierarchical random forest (Sánchez-Sáez et al. 2021,
AJ 161, 141; ``lc_classifier``'s ``HierarchicalRandomForest``).

Four imbalanced-learn ``BalancedRandomForestClassifier``: a top model (Periodic, Stochastic,
Transient) and one per branch. ``P(class) = P(branch) * P(class | branch)``, so the 15 class
probabilities sum to 1 as the 3 branch probabilities do. Features are prepared as ALeRCE's
``FeaturePreprocessor`` does: infinities become missing, missing becomes -999, values above 1e32
become 0; the feature list and its order are saved with the model.

Gate: an object is classified only with at least :data:`MIN_DETECTIONS` detections in g or in r
(the stored ``n_det_1``/``n_det_2`` features); :func:`gate_reason` says why one is not.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

MODEL_NAME = "lc_classifier"
TAXONOMY = {
    "Transient": ["SNIa", "SNIbc", "SNII", "SLSN"],
    "Stochastic": ["AGN", "QSO", "Blazar", "CV/Nova", "YSO"],
    "Periodic": ["CEP", "DSCT", "E", "LPV", "RRL", "Periodic-Other"],
}
BRANCHES = tuple(TAXONOMY)
CLASSES = tuple(c for classes in TAXONOMY.values() for c in classes)
BRANCH_OF = {c: branch for branch, classes in TAXONOMY.items() for c in classes}
CLASSIFIER_NAMES = {
    "classes": "lc_classifier",
    "top": "lc_classifier_top",
    "Transient": "lc_classifier_transient",
    "Stochastic": "lc_classifier_stochastic",
    "Periodic": "lc_classifier_periodic",
}
FILL_VALUE = -999.0
MIN_DETECTIONS = 6

# Stored features the model does not read, and why (the training data cannot supply them):
# - position and catalogue context (simulated stars would get invented values, real BTS curves none);
# - the corrected colours, present only for corrected objects (in training: only simulated stars);
# - upper-limit features (the real BTS light curves carry no non-detections).
UNUSED_FEATURES = {
    "gal_b", "gal_l", "rb", "sgscore1", "W1-W2", "W2-W3", "g-W2", "g-W3", "r-W2", "r-W3",
    "g-r_max_corr", "g-r_mean_corr",
    *(f"{base}_{band}" for band in (1, 2) for base in (
        "dmag_first_det_fid", "dmag_non_det_fid", "last_diffmaglim_before_fid", "last_mjd_before_fid",
        "max_diffmaglim_after_fid", "max_diffmaglim_before_fid", "median_diffmaglim_after_fid",
        "median_diffmaglim_before_fid", "n_non_det_after_fid", "n_non_det_before_fid")),
}

# ALeRCE's settings (lc_classifier HierarchicalRandomForest): entropy, sqrt features, 0.2 stochastic
FOREST_DEFAULTS = dict(n_estimators=500, criterion="entropy", max_features="sqrt", max_depth=None,
                       min_samples_split=2, min_samples_leaf=1)
BRANCH_MAX_FEATURES = {"top": "sqrt", "Transient": "sqrt", "Stochastic": 0.2, "Periodic": "sqrt"}


class ModelMismatch(RuntimeError):
    """The saved model was made for another feature set or library version."""


def model_feature_names(all_names):
    """The features the model reads, in the stored order."""
    return [name for name in all_names if name not in UNUSED_FEATURES]


def preprocess(features: pd.DataFrame, feature_list) -> np.ndarray:
    """ALeRCE's FeaturePreprocessor: the model's columns, inf -> missing -> -999, > 1e32 -> 0.
    A feature the input lacks entirely is missing (-999), never an error: no object is dropped."""
    values = features.reindex(columns=list(feature_list)).to_numpy(dtype=float, copy=True)
    values[~np.isfinite(values)] = FILL_VALUE
    values[values > 1e32] = 0.0
    return values


def passes_gate(n_det_g, n_det_r, minimum=MIN_DETECTIONS):
    """Boolean array: at least ``minimum`` detections in g or in r (missing counts as 0)."""
    g = np.nan_to_num(np.asarray(n_det_g, dtype=float), nan=0.0)
    r = np.nan_to_num(np.asarray(n_det_r, dtype=float), nan=0.0)
    return (g >= minimum) | (r >= minimum)


def gate_reason(n_det_g, n_det_r, minimum=MIN_DETECTIONS):
    """Why an object gets no light-curve classification ('' when it passes the gate)."""
    if passes_gate([n_det_g], [n_det_r], minimum)[0]:
        return ""
    g = 0 if n_det_g is None or not np.isfinite(n_det_g) else int(n_det_g)
    r = 0 if n_det_r is None or not np.isfinite(n_det_r) else int(n_det_r)
    return f"fewer than {minimum} detections in g ({g}) and in r ({r})"


class HierarchicalClassifier:
    """The four forests, their feature list and version; ``predict_proba`` gives every level."""

    def __init__(self, version, feature_list, feature_version, n_estimators=500, max_depth=None,
                 random_state=0, n_jobs=1):
        self.version = version
        self.feature_list = list(feature_list)
        self.feature_version = feature_version
        self.params = dict(FOREST_DEFAULTS, n_estimators=n_estimators, max_depth=max_depth)
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.models = {}
        self.library_versions = _library_versions()

    def _forest(self, level):
        from imblearn.ensemble import BalancedRandomForestClassifier

        params = dict(self.params, max_features=BRANCH_MAX_FEATURES[level])
        # imbalanced-learn >= 0.13 defaults; stated so a later version does not change the model
        return BalancedRandomForestClassifier(sampling_strategy="all", replacement=True, bootstrap=False,
                                              random_state=self.random_state, n_jobs=self.n_jobs, **params)

    def fit(self, features: pd.DataFrame, labels, progress=None):
        """Fit on a frame of features (index oid) and ALeRCE class labels (same order)."""
        labels = np.asarray(labels, dtype=object)
        unknown = set(labels) - set(CLASSES)
        if unknown:
            raise ValueError(f"labels outside the taxonomy: {sorted(unknown)}")
        x = preprocess(features, self.feature_list)
        branch = np.array([BRANCH_OF[c] for c in labels], dtype=object)
        for level in ("top",) + BRANCHES:
            mask = np.ones(len(labels), bool) if level == "top" else branch == level
            target = branch if level == "top" else labels
            self.models[level] = self._forest(level).fit(x[mask], target[mask])
            if progress:
                progress(level)
        return self

    def check(self, feature_version):
        if feature_version != self.feature_version:
            raise ModelMismatch(f"model {self.version} was trained on features {self.feature_version}, "
                                f"got {feature_version}")

    def predict_proba(self, features: pd.DataFrame) -> dict:
        """{'top': oid x branch, 'Transient'|'Stochastic'|'Periodic': oid x class given the branch,
        'classes': oid x the 15 classes = P(branch) * P(class | branch)}."""
        x = np.ascontiguousarray(preprocess(features, self.feature_list), dtype=np.float32)
        out = {}
        top = self.models["top"]
        out["top"] = pd.DataFrame(forest_proba(top, x), index=features.index, columns=top.classes_)[list(BRANCHES)]
        joint = []
        for branch in BRANCHES:
            model = self.models[branch]
            conditional = pd.DataFrame(forest_proba(model, x), index=features.index, columns=model.classes_)
            conditional = conditional.reindex(columns=TAXONOMY[branch], fill_value=0.0)
            out[branch] = conditional
            joint.append(conditional.mul(out["top"][branch], axis=0))
        out["classes"] = pd.concat(joint, axis=1)[list(CLASSES)]
        return out


def forest_proba(forest, x32):
    """``forest.predict_proba`` without its per-tree dispatch: the mean of the trees' leaf class
    fractions (what scikit-learn averages), on float32 input as scikit-learn casts it. Same numbers,
    several times faster on small batches."""
    total = np.zeros((len(x32), len(forest.classes_)))
    for tree in forest.estimators_:
        total += tree.tree_.predict(x32).reshape(len(x32), -1)[:, :len(forest.classes_)]
    return total / len(forest.estimators_)


def probability_rows(probabilities: dict, version) -> pd.DataFrame:
    """Long rows (oid, classifier_name, classifier_version, class_name, probability, ranking) of every
    level; ranking 1 is the most probable class of each classifier (ties: taxonomy order)."""
    parts = []
    for level, name in CLASSIFIER_NAMES.items():
        table = probabilities.get(level)
        if table is None or table.empty:
            continue
        values = table.to_numpy(dtype=float)
        order = np.argsort(-values, axis=1, kind="stable")
        ranking = np.empty_like(order)
        np.put_along_axis(ranking, order, np.arange(1, values.shape[1] + 1)[None, :].repeat(len(values), 0), axis=1)
        parts.append(pd.DataFrame({
            "oid": np.repeat(table.index.to_numpy(), values.shape[1]),
            "classifier_name": name,
            "classifier_version": version,
            "class_name": np.tile(np.asarray(table.columns, dtype=object), len(values)),
            "probability": values.ravel(),
            "ranking": ranking.ravel(),
        }))
    if not parts:
        return pd.DataFrame(columns=["oid", "classifier_name", "classifier_version", "class_name",
                                     "probability", "ranking"])
    return pd.concat(parts, ignore_index=True)


def classify(model: HierarchicalClassifier, features: pd.DataFrame, feature_version=None):
    """Probabilities of the objects that pass the gate -> (long rows, wide probabilities dict,
    {oid: reason} of the objects left out)."""
    if feature_version is not None:
        model.check(feature_version)
    n_g = features["n_det_1"] if "n_det_1" in features else pd.Series(np.nan, index=features.index)
    n_r = features["n_det_2"] if "n_det_2" in features else pd.Series(np.nan, index=features.index)
    ok = passes_gate(n_g, n_r)
    left_out = {oid: gate_reason(g, r) for oid, g, r in zip(features.index[~ok], n_g[~ok], n_r[~ok])}
    kept = features[ok]
    if kept.empty:
        return probability_rows({}, model.version), {}, left_out
    probabilities = model.predict_proba(kept)
    return probability_rows(probabilities, model.version), probabilities, left_out


def _library_versions():
    import imblearn
    import sklearn

    return {"scikit-learn": sklearn.__version__, "imbalanced-learn": imblearn.__version__}


def save(model, path, outliers=None):
    import joblib

    joblib.dump({"classifier": model, "outliers": outliers}, path, compress=("xz", 6))


def load(path):
    """(classifier, outliers) from a saved artefact; refuses one made by other library versions."""
    import joblib

    saved = joblib.load(path)
    model = saved["classifier"]
    if model.library_versions != _library_versions():
        raise ModelMismatch(f"model made with {model.library_versions}, running {_library_versions()}")
    return model, saved["outliers"]
