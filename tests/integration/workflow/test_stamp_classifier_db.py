"""The stamp classifier in the eager canvas: first alert of each new object, probabilities in the
Probability table, bad cutouts quarantined for this step only (the other steps go on)."""
import io
import shutil

import fastavro
import numpy as np
import pandas as pd
import pytest
from django.db.models import Count, Sum

from pipeline.ingest.runner import ingest_paths
from pipeline.models import MagStats, Probability, Quarantine, StepTiming
from pipeline.steps import stamps
from pipeline.workflow import stamp_step, step_tasks
from tests.conftest import require_shared

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stamp_classifier]

MULTI_ALERT_OID = "ZTF19abegmle"  # 7 real packets of one object


def read_record(path):
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        return reader.writer_schema, next(iter(reader))


@pytest.fixture
def night(broker_env):
    """Real packets: one object with 7 alerts, 8 single-alert objects, one packet whose cutouts were
    stripped upstream, and one real packet whose difference cutout was corrupted here."""
    alerts = require_shared("ztf_alerts")
    stripped = require_shared("ztf_alerts_no_cutouts")
    manifest = pd.read_csv(require_shared("ztf_alerts_manifest.csv"))
    with_cutouts = manifest[(manifest["dir"] == "ztf_alerts") & (manifest["n_cutouts"] == 3)]
    multi = with_cutouts[with_cutouts["objectId"] == MULTI_ALERT_OID]
    singles = with_cutouts[~with_cutouts["objectId"].duplicated(keep=False)].sort_values("file")
    folder = broker_env / "night"
    folder.mkdir()
    for name in list(multi["file"]) + list(singles["file"][:8]):
        shutil.copy(alerts / name, folder / name)
    no_cutouts = sorted(stripped.glob("*.avro"))[0]
    shutil.copy(no_cutouts, folder / no_cutouts.name)

    corrupt_source = alerts / singles["file"].iloc[8]
    schema, record = read_record(corrupt_source)
    record["cutoutDifference"]["stampData"] = b"\x1f\x8b\x08 this is not a gzipped FITS file"
    with open(folder / f"corrupt_{corrupt_source.name}", "wb") as fh:
        fastavro.writer(fh, schema, [record])
    return {
        "folder": folder,
        "multi": multi,
        "good_oids": sorted(set(multi["objectId"]) | set(singles["objectId"][:8])),
        "no_cutouts_oid": read_record(no_cutouts)[1]["objectId"],
        "corrupt_oid": record["objectId"],
    }


def test_first_alerts_classified_bad_cutouts_quarantined_for_this_step_only(night):
    summary = ingest_paths([night["folder"]], batch_size=100, progress=False)
    assert summary.quarantined == 0 and not summary.step_failures, summary.report()

    model = stamp_step.classifier()
    probs = Probability.objects.filter(classifier_name="stamp_classifier")
    assert set(probs.values_list("oid", flat=True)) == set(night["good_oids"])
    assert probs.count() == 5 * len(night["good_oids"])
    assert set(probs.values_list("classifier_version", flat=True)) == {model.version}
    for row in probs.values("oid").annotate(total=Sum("probability"), n=Count("id")):
        assert row["n"] == 5 and row["total"] == pytest.approx(1.0, abs=1e-5)
    assert probs.filter(ranking=1).count() == len(night["good_oids"])

    # Only the object's first alert (earliest jd of its 7) is classified.
    multi = night["multi"].sort_values("jd")
    assert stamp_step.first_alerts([MULTI_ALERT_OID])[0][0] == int(multi["candid"].iloc[0])
    schema, first = read_record(night["folder"] / multi["file"].iloc[0])
    batch = stamps.prepare_alerts([first])
    expected = model.predict_proba(batch.stacks, batch.features)[0]
    stored = dict(probs.filter(oid=MULTI_ALERT_OID).values_list("class_name", "probability"))
    np.testing.assert_allclose([stored[c] for c in stamps.CLASSES], expected, atol=1e-6)

    # Missing and corrupt cutouts: quarantined for the stamp classifier only; the other steps went on.
    quarantined = {q.oid: q for q in Quarantine.objects.all()}
    assert set(quarantined) == {night["no_cutouts_oid"], night["corrupt_oid"]}
    assert {q.step for q in quarantined.values()} == {"stamp_classifier"}
    assert "cutoutScience missing" in quarantined[night["no_cutouts_oid"]].reason
    assert "cutoutDifference unreadable" in quarantined[night["corrupt_oid"]].reason
    assert MagStats.objects.filter(oid__in=list(quarantined)).values("oid").distinct().count() == 2
    assert StepTiming.objects.filter(step="stamp_classifier").aggregate(n=Sum("n"))["n"] == len(night["good_oids"])

    # Running the step again, or ingesting the night again, writes nothing new.
    before = (probs.count(), Quarantine.objects.count())
    oids = night["good_oids"] + [night["no_cutouts_oid"], night["corrupt_oid"]]
    assert step_tasks.stamp_classify("again", oids)["n"] == len(night["good_oids"])
    ingest_paths([night["folder"]], batch_size=100, progress=False)
    assert (probs.count(), Quarantine.objects.count()) == before


def test_reprocess_classifies_stamps_again_only_when_asked(night):
    from django.core.management import call_command

    ingest_paths([night["folder"]], batch_size=100, progress=False)
    probs = Probability.objects.filter(classifier_name="stamp_classifier")
    stored = sorted(probs.values_list("oid", "class_name", "probability"))
    assert len(stored) == 5 * len(night["good_oids"])
    probs.delete()
    call_command("reprocess", *night["good_oids"], stdout=io.StringIO())
    assert not probs.exists()  # the stamp classifier runs for new objects only
    call_command("reprocess", "--all", "--stamps", stdout=io.StringIO())
    again = sorted(probs.values_list("oid", "class_name", "probability"))
    assert [r[:2] for r in again] == [r[:2] for r in stored]
    np.testing.assert_allclose([r[2] for r in again], [r[2] for r in stored], atol=1e-6)


def test_worker_says_where_the_classifier_runs(caplog):
    stamp_step.classifier.cache_clear()
    with caplog.at_level("INFO", logger="pipeline.workflow.stamp_step"):
        stamp_step.classifier()
    if stamps.device_description().startswith("GPU"):
        assert "runs on GPU" in caplog.text
    else:
        assert "no GPU visible to TensorFlow, running on the CPU" in caplog.text


ORDER_OIDS = ("ZTF18abwvktq", "ZTF20aawkwsc")  # 3 real packets each, all with cutouts


def _stamp_probabilities():
    rows = Probability.objects.filter(classifier_name="stamp_classifier").values_list("oid", "class_name", "probability")
    return {(oid, name): p for oid, name, p in rows}


def _forget_everything(broker_env, name):
    from django.apps import apps

    from pipeline import backends

    for model in apps.get_app_config("pipeline").get_models():
        model.objects.all().delete()
    from django.conf import settings

    settings.ALERT_ARCHIVE_URL = str(broker_env / name)
    backends.archive.cache_clear()


def test_stamp_class_is_the_first_alerts_whatever_the_arrival_order(broker_env):
    """Each object's earliest alert (by time) is classified, whether it arrives first or last."""
    from pipeline.models import Object
    from pipeline.workflow import repair

    alerts = require_shared("ztf_alerts")
    manifest = pd.read_csv(require_shared("ztf_alerts_manifest.csv"))
    chosen = manifest[(manifest["dir"] == "ztf_alerts") & manifest["objectId"].isin(ORDER_OIDS)].sort_values("jd")
    assert len(chosen) == 6 and set(chosen["n_cutouts"]) == {3}
    oldest_first = [alerts / name for name in chosen["file"]]

    results = {}
    for order, paths in (("newest first", oldest_first[::-1]), ("oldest first", oldest_first)):
        _forget_everything(broker_env, f"archive {order}")
        summary = ingest_paths(paths, batch_size=1, progress=False)  # one alert per batch, in this order
        assert summary.quarantined == 0 and not summary.step_failures, summary.report()
        results[order] = _stamp_probabilities()
        earliest = chosen.drop_duplicates("objectId")
        assert dict(Object.objects.filter(oid__in=ORDER_OIDS).values_list("oid", "stamp_candid")) == dict(
            zip(earliest["objectId"], earliest["candid"].astype(int)))
        assert not repair.find_behind()["stamp_classifier"]

    assert len(results["oldest first"]) == 5 * len(ORDER_OIDS)
    assert results["newest first"].keys() == results["oldest first"].keys()
    for key, p in results["oldest first"].items():
        assert results["newest first"][key] == pytest.approx(p, abs=1e-6), key
    # ... and they are the model's probabilities of each object's earliest alert, computed here.
    model = stamp_step.classifier()
    for oid, name in chosen.drop_duplicates("objectId")[["objectId", "file"]].itertuples(index=False):
        batch = stamps.prepare_alerts([read_record(alerts / name)[1]])
        expected = model.predict_proba(batch.stacks, batch.features)[0]
        np.testing.assert_allclose([results["oldest first"][(oid, c)] for c in stamps.CLASSES], expected, atol=1e-6)

    # An object whose recorded first alert is no longer its earliest is behind the stamp classifier.
    oid = ORDER_OIDS[0]
    Object.objects.filter(oid=oid).update(stamp_candid=int(chosen[chosen["objectId"] == oid]["candid"].iloc[-1]))
    assert repair.find_behind()["stamp_classifier"] == {oid}
