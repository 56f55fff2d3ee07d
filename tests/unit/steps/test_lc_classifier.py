"""The light-curve classifier: probabilities, gate, ranking, -999 fill, outliers, simulated training data."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.offline import lightcurves as lc_files
from pipeline.simulation import lightcurves as simlc
from pipeline.steps import lc_classifier as lcc
from pipeline.steps.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.steps.outliers import BranchOutliers
from tests.conftest import require_shared

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "models" / "lc_classifier" / "model.joblib"


@pytest.fixture(scope="module")
def toy_model():
    """A small model on separable random features: class k has feature f{k} shifted by 3."""
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(len(lcc.CLASSES))] + ["n_det_1", "n_det_2"]
    labels = np.repeat(lcc.CLASSES, 12)
    x = rng.normal(size=(len(labels), len(names)))
    for row, label in enumerate(labels):
        x[row, lcc.CLASSES.index(label)] += 3.0
    features = pd.DataFrame(x, columns=names, index=[f"o{i}" for i in range(len(labels))])
    features["n_det_1"], features["n_det_2"] = 10, 10
    model = lcc.HierarchicalClassifier("test-1", names[:-2], FEATURE_VERSION, n_estimators=10, random_state=0)
    return model.fit(features, labels), features, labels


def test_probabilities_sum_to_one_at_every_level_and_multiply_down(toy_model):
    model, features, _ = toy_model
    p = model.predict_proba(features)
    assert list(p["classes"].columns) == list(lcc.CLASSES)
    np.testing.assert_allclose(p["classes"].sum(axis=1), 1.0)
    np.testing.assert_allclose(p["top"].sum(axis=1), 1.0)
    for branch in lcc.BRANCHES:
        np.testing.assert_allclose(p[branch].sum(axis=1), 1.0)
        for cls in lcc.TAXONOMY[branch]:
            np.testing.assert_allclose(p["classes"][cls], p["top"][branch] * p[branch][cls])


def test_rows_carry_alerce_names_and_rankings(toy_model):
    model, features, labels = toy_model
    rows, wide, left_out = lcc.classify(model, features.iloc[:3], FEATURE_VERSION)
    assert not left_out
    assert set(rows["classifier_name"]) == {"lc_classifier", "lc_classifier_top", "lc_classifier_transient",
                                            "lc_classifier_stochastic", "lc_classifier_periodic"}
    per = rows.groupby(["oid", "classifier_name"])
    np.testing.assert_allclose(per["probability"].sum(), 1.0)
    assert (per["ranking"].apply(sorted).map(tuple) == per.size().map(lambda n: tuple(range(1, n + 1)))).all()
    best = rows[(rows["classifier_name"] == "lc_classifier") & (rows["ranking"] == 1)].set_index("oid")
    assert (best["class_name"] == wide["classes"].idxmax(axis=1)).all()
    assert (rows["classifier_version"] == "test-1").all()


def test_ranking_by_hand():
    top = pd.DataFrame([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]], index=["a", "b"], columns=lcc.BRANCHES)
    rows = lcc.probability_rows({"top": top}, "v")
    rank = rows.set_index(["oid", "class_name"])["ranking"]
    assert [rank["a", b] for b in lcc.BRANCHES] == [3, 1, 2]
    assert [rank["b", b] for b in lcc.BRANCHES] == [1, 2, 3]  # a tie goes to the taxonomy order


def test_missing_values_are_filled_with_minus_999_as_alerce():
    frame = pd.DataFrame({"a": [np.nan, 1.0], "b": [np.inf, -np.inf], "c": [1e33, 2.0]}, index=["x", "y"])
    values = lcc.preprocess(frame, ["a", "b", "c", "absent"])
    np.testing.assert_array_equal(values, [[-999, -999, 0, -999], [1, -999, 2, -999]])


def test_gate_needs_six_detections_in_g_or_in_r(toy_model):
    assert list(lcc.passes_gate([6, 5, 0, np.nan, 5], [0, 5, 6, 7, np.nan])) == [True, False, True, True, False]
    assert lcc.gate_reason(5, 2) == "fewer than 6 detections in g (5) and in r (2)"
    assert lcc.gate_reason(6, 0) == ""
    model, features, _ = toy_model
    few = features.iloc[:4].copy()
    few["n_det_1"] = [6, 5, 0, np.nan]
    few["n_det_2"] = [0, 5, 6, 3]
    rows, _, left_out = lcc.classify(model, few)
    assert set(rows["oid"]) == {few.index[0], few.index[2]}
    assert set(left_out) == {few.index[1], few.index[3]}
    assert left_out[few.index[3]] == "fewer than 6 detections in g (0) and in r (3)"


def test_model_refuses_other_feature_version(toy_model):
    model, features, _ = toy_model
    with pytest.raises(lcc.ModelMismatch):
        lcc.classify(model, features, "features-0.0.1")


def test_simulated_light_curves_are_marked_reproducible_and_pass_the_gate():
    det, nd, objects = simlc.simulate({"RRL": 3, "AGN": 3}, seed=4)
    again, _, _ = simlc.simulate({"RRL": 3, "AGN": 3}, seed=4)
    pd.testing.assert_frame_equal(det, again)
    assert objects["oid"].str.startswith(simlc.OID_PREFIX).all()
    assert (objects["label_source"] == "simulated").all()
    counts = det.groupby(["oid", "fid"]).size().unstack(fill_value=0)
    assert (counts.max(axis=1) >= 6).all()
    # 5-sigma detections: errors of a few tenths of a magnitude at most, typically below 0.2
    assert (det["sigmapsf"] > 0).all() and det["sigmapsf"].median() < 0.2
    assert len(nd) and (nd["diffmaglim"].between(19.3, 21.0)).all()


def _features(classes, n, seed):
    det, nd, objects = simlc.simulate({c: n for c in classes}, seed=seed)
    values = lc_files.features(det, nd, objects[["oid", "corrected", "stellar"]])
    return values, objects.set_index("oid").loc[values.index, "class"].to_numpy()


def test_a_class_withheld_from_training_scores_as_outlier_more_often():
    held_in = ("RRL", "E", "DSCT", "CEP")
    train, _ = _features(held_in, 60, seed=11)
    test_in, _ = _features(held_in, 15, seed=12)
    names = lcc.model_feature_names(FEATURE_NAMES)
    forests = BranchOutliers("t", names, n_estimators=100, random_state=0).fit(train, ["Periodic"] * len(train))
    scored_in = forests.score(test_in, ["Periodic"] * len(test_in))
    assert scored_in["is_outlier"].mean() <= 0.1
    for withheld_class in ("LPV", "CV/Nova"):  # a periodic class, and a class of another branch
        withheld, _ = _features((withheld_class,), 20, seed=13)
        scored_out = forests.score(withheld, ["Periodic"] * len(withheld))
        assert scored_out["score"].median() > scored_in["score"].quantile(0.9), withheld_class
    # the top-1% flag (threshold from the training tail) catches the class of another branch
    assert scored_out["is_outlier"].mean() > scored_in["is_outlier"].mean()


def test_files_normalised_and_bad_files_named():
    frame = pd.DataFrame({"oid": ["a", "a"], "mjd": [1.0, 2.0], "fid": ["g", "R"], "mag": [18.0, 18.5],
                          "magerr": [0.1, 0.1]})
    det = lc_files.normalise_detections(frame)
    assert list(det["fid"]) == [1, 2] and list(det["magpsf"]) == [18.0, 18.5] and list(det["isdiffpos"]) == ["t", "t"]
    assert not lc_files.object_flags(det)["corrected"].any()
    with pytest.raises(lc_files.InputError, match="sigmapsf"):
        lc_files.normalise_detections(frame.drop(columns=["magerr"]))
    with pytest.raises(lc_files.InputError, match="unknown band"):
        lc_files.normalise_detections(frame.assign(fid=["g", "z"]))


def test_committed_model_classifies_real_alerce_sne_ia_as_transients():
    folder = require_shared("labeled", "alerce_sne30")
    model, forests = lcc.load(MODEL)
    assert model.feature_version == FEATURE_VERSION and forests.version == model.version
    rows, left_out = lc_files.classify_lightcurves(
        model, pd.read_csv(folder / "detections.csv", low_memory=False),
        pd.read_csv(folder / "non_detections.csv", low_memory=False))
    top = rows[(rows["classifier_name"] == "lc_classifier_top") & (rows["ranking"] == 1)]
    assert top["oid"].nunique() + len(left_out) == 22
    labels = pd.read_csv(folder / "labels.csv").set_index("objectId")["classALeRCE"]
    snia = top[top["oid"].map(labels) == "SNIa"]
    assert len(snia) >= 10
    assert (snia["class_name"] == "Transient").mean() >= 0.8  # the target on real SNe Ia


def test_training_is_reproducible_with_a_seed(toy_model):
    model, features, labels = toy_model
    again = lcc.HierarchicalClassifier("test-1", model.feature_list, FEATURE_VERSION, n_estimators=10, random_state=0)
    again.fit(features, labels)
    pd.testing.assert_frame_equal(again.predict_proba(features)["classes"], model.predict_proba(features)["classes"])
    other = lcc.HierarchicalClassifier("test-1", model.feature_list, FEATURE_VERSION, n_estimators=10, random_state=1)
    other.fit(features, labels)
    assert not np.allclose(other.predict_proba(features)["classes"], model.predict_proba(features)["classes"])


def test_classify_lightcurves_command_writes_rows_above_the_gate_only(tmp_path):
    import io

    from django.core.management import call_command

    det, nd, objects = simlc.simulate({"RRL": 2, "QSO": 1}, seed=8)
    short = objects["oid"].iloc[-1]
    keep = det[det["oid"] == short].groupby("fid").head(2).index  # 2 detections per band: below the gate
    det = det[(det["oid"] != short) | det.index.isin(keep)]
    det[["oid", "mjd", "fid", "magpsf", "sigmapsf", "isdiffpos"]].rename(
        columns={"magpsf": "mag", "sigmapsf": "magerr"}).to_csv(tmp_path / "det.csv", index=False)
    nd[["oid", "mjd", "fid", "diffmaglim"]].to_csv(tmp_path / "nd.csv", index=False)
    out = io.StringIO()
    call_command("classify_lightcurves", str(tmp_path / "det.csv"), non_detections=str(tmp_path / "nd.csv"),
                 out=str(tmp_path / "probs.csv"), model=str(MODEL), stdout=out)
    probs = pd.read_csv(tmp_path / "probs.csv")
    assert list(probs.columns) == ["oid", "classifier_name", "classifier_version", "class_name", "probability", "ranking"]
    assert set(probs["oid"]) == set(objects["oid"]) - {short}
    assert len(probs) == 33 * 2
    np.testing.assert_allclose(probs.groupby(["oid", "classifier_name"])["probability"].sum(), 1.0)
    assert f"{short}: fewer than 6 detections in g (2) and in r (2)" in out.getvalue()


def test_fast_forest_probabilities_equal_scikit_learns():
    model, _ = lcc.load(MODEL)
    x = np.random.default_rng(2).normal(15.0, 5.0, size=(50, len(model.feature_list)))
    x[::3, :40] = lcc.FILL_VALUE
    for forest in model.models.values():
        np.testing.assert_allclose(lcc.forest_proba(forest, x.astype(np.float32)), forest.predict_proba(x), atol=1e-12)
