"""The light-curve classifier in the eager canvas: Probability rows above the gate, none below,
outlier scores for every classified object; re-running writes nothing new."""
import pandas as pd
import pytest
from django.db.models import Count, Sum

from pipeline.ingest.runner import ingest_paths
from pipeline.models import Object, OutlierScore, Probability, StepTiming
from pipeline.simulation.night import simulate_night
from pipeline.steps import lc_classifier as lcc
from pipeline.steps.features import FEATURE_VERSION
from pipeline.store import loaders
from pipeline.workflow import step_tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_eager_canvas_classifies_objects_above_the_gate_only(broker_env):
    night_dir = broker_env / "night"
    simulate_night(night_dir, 60, seed=3)
    ingest_paths([night_dir], batch_size=100, progress=False)

    oids = list(Object.objects.values_list("oid", flat=True))
    features = loaders.feature_matrix(oids, FEATURE_VERSION)
    above = set(features.index[lcc.passes_gate(features["n_det_1"], features["n_det_2"])])
    assert len(above) >= 5 and len(set(oids) - above) >= 5  # both sides of the gate are exercised

    classified = set(Probability.objects.values_list("oid", flat=True).distinct())
    assert classified == above
    reasons = loaders.lc_gate_reasons(oids + ["ZTF00nothere"], FEATURE_VERSION)
    assert {oid for oid, why in reasons.items() if not why} == above
    below = sorted(set(oids) - above)[0]
    g, r = (int(features.loc[below, f"n_det_{b}"]) if pd.notna(features.loc[below, f"n_det_{b}"]) else 0 for b in (1, 2))
    assert reasons[below] == f"fewer than 6 detections in g ({g}) and in r ({r})"
    assert reasons["ZTF00nothere"] == "no light-curve features yet"
    rows = pd.DataFrame(Probability.objects.values("oid", "classifier_name", "class_name", "probability", "ranking"))
    per = rows.groupby(["oid", "classifier_name"])
    assert per["probability"].sum().sub(1.0).abs().max() < 1e-9
    sizes = per.size().unstack()
    assert (sizes["lc_classifier"] == 15).all() and (sizes["lc_classifier_top"] == 3).all()
    assert (sizes["lc_classifier_transient"] == 4).all() and (sizes["lc_classifier_stochastic"] == 5).all()
    assert (sizes["lc_classifier_periodic"] == 6).all()
    assert (rows[rows["ranking"] == 1].groupby(["oid", "classifier_name"]).size() == 1).all()

    top = rows[(rows["classifier_name"] == "lc_classifier_top") & (rows["ranking"] == 1)].set_index("oid")
    scores = pd.DataFrame(OutlierScore.objects.values("oid", "branch", "score", "version")).set_index("oid")
    assert set(scores.index) == above
    assert (scores["branch"] == top.loc[scores.index, "class_name"]).all()
    assert StepTiming.objects.filter(step="lc_classifier").exists() and StepTiming.objects.filter(step="outliers").exists()

    # the same objects again (a re-delivered batch, or reprocess): upserts, nothing new
    n_rows, total = Probability.objects.count(), Probability.objects.aggregate(s=Sum("probability"))["s"]
    step_tasks.lc_classify("again", oids)
    step_tasks.outliers("again", oids)
    assert Probability.objects.count() == n_rows == 33 * len(above)
    assert Probability.objects.aggregate(s=Sum("probability"))["s"] == pytest.approx(total)
    assert OutlierScore.objects.count() == len(above)
    assert not Probability.objects.values("oid", "classifier_name", "class_name").annotate(
        n=Count("id")).filter(n__gt=1).exists()
