"""Find the objects whose steps are behind their detections, and run the step graph for them again.

Each step says how to tell that an object is behind it, with ``@behind("step")`` over a function
returning a queryset of oids (the objects are then re-run through the whole canvas; every step is an
upsert, so the steps that were not behind write nothing new). A new step registers its own rule, e.g.
objects with features but no probability of the classifier's current version.
"""
import json
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef
from django.utils import timezone

from pipeline.models import (
    BatchCanvas, Detection, Feature, Object, ObjectFeatureState, OutlierScore, Probability, PublishedAlert,
    Quarantine, RawAlert,
)
from pipeline.steps import lc_classifier
from pipeline.steps.features import FEATURE_VERSION
from pipeline.store import loaders
from pipeline.workflow import batches
from pipeline.workflow.timing import new_batch_id

BEHIND = {}


def behind(step):
    """Register ``fn() -> queryset of oids`` as the rule for objects behind ``step``."""

    def register(fn):
        BEHIND[step] = fn
        return fn

    return register


@behind("correct")
def uncorrected():
    """ZTF objects with a detection not yet corrected (the step corrects ZTF only; Rubin's stay null)."""
    return (Detection.objects.filter(oid__survey="ztf", corrected__isnull=True)
            .values_list("oid", flat=True).distinct())


@behind("magstats")
def stats_behind_detections():
    """Magstats also writes the object's ndet: an object whose ndet is not its detection count."""
    return Object.objects.annotate(n=Count("detections")).exclude(ndet=F("n")).values_list("oid", flat=True)


@behind("features")
def features_behind():
    """No feature state of the current version at the object's detection count."""
    current = ObjectFeatureState.objects.filter(oid=OuterRef("oid"), version=FEATURE_VERSION, ndet=OuterRef("ndet"))
    return Object.objects.filter(~Exists(current)).values_list("oid", flat=True)


def _model_version(metadata_file):
    """A trained artefact's version, read from its small metadata file (no model loaded)."""
    return json.loads(Path(metadata_file).read_text())["version"]


def _lc_version():
    return _model_version(Path(settings.LC_CLASSIFIER_MODEL).with_name("metrics.json"))


@behind("lc_classifier")
def unclassified_above_the_gate():
    """ZTF objects whose current features pass the gate but have no probability of the current model."""
    passing = Feature.objects.filter(version=FEATURE_VERSION, name__in=["n_det_1", "n_det_2"],
                                     value__gte=lc_classifier.MIN_DETECTIONS).values_list("oid", flat=True)
    classified = Probability.objects.filter(classifier_name=lc_classifier.MODEL_NAME,
                                            classifier_version=_lc_version()).values_list("oid", flat=True)
    return Object.objects.filter(survey="ztf", oid__in=passing).exclude(oid__in=classified).values_list("oid", flat=True)


@behind("outliers")
def classified_without_outlier_score():
    version = _lc_version()
    classified = Probability.objects.filter(classifier_name="lc_classifier_top", classifier_version=version,
                                            ranking=1).values_list("oid", flat=True)
    scored = OutlierScore.objects.filter(version=version).values_list("oid", flat=True)
    return Object.objects.filter(oid__in=classified).exclude(oid__in=scored).values_list("oid", flat=True)


@behind("stamp_classifier")
def stamps_unclassified():
    """ZTF objects with no stamp probability of the current model, or whose first alert by time is not
    the one the classifier took (an earlier one arrived later), when the step is on."""
    if not settings.STAMP_CLASSIFIER_ENABLED:
        return Object.objects.none().values_list("oid", flat=True)
    version = _model_version(Path(settings.STAMP_CLASSIFIER_DIR) / "model.json")
    done = Probability.objects.filter(classifier_name="stamp_classifier", classifier_version=version)
    unclassified = (Object.objects.filter(survey="ztf").exclude(oid__in=done.values_list("oid", flat=True))
                    .values_list("oid", flat=True))
    return set(unclassified) | set(loaders.stamp_outdated())


@behind("publish")
def alerts_not_published():
    """Objects with an ingested alert (its detection stored) not yet on the output stream (when it is on):
    the stream was unreachable when their batch ran."""
    if not settings.OUTPUT_STREAM_URL:
        return Object.objects.none().values_list("oid", flat=True)
    stored = Detection.objects.filter(candid=OuterRef("candid"), survey=OuterRef("survey"))
    sent = PublishedAlert.objects.filter(candid=OuterRef("candid"), survey=OuterRef("survey"))
    return (RawAlert.objects.filter(Exists(stored)).exclude(Exists(sent))
            .values_list("oid", flat=True).distinct())


def find_behind(min_age_minutes=0.0):
    """{step: set of oids} for every registered step, plus "unlaunched" (batches the broker never
    accepted or whose canvas failed). Objects touched in the last ``min_age_minutes`` are left alone
    (their batch may be in flight), and so are objects a step quarantined (they would fail again)."""
    cutoff = timezone.now() - timedelta(minutes=min_age_minutes)
    quiet = set(Object.objects.filter(updated__lte=cutoff).values_list("oid", flat=True))
    poisoned = set(Quarantine.objects.exclude(step="ingest").exclude(oid="").values_list("oid", flat=True))
    found = {step: (set(rule()) & quiet) - poisoned for step, rule in BEHIND.items()}
    unlaunched = set()
    for oids in BatchCanvas.objects.filter(state__in=[BatchCanvas.NOT_LAUNCHED, BatchCanvas.FAILED]).values_list(
        "oids", flat=True
    ):
        unlaunched.update(oids)
    found["unlaunched"] = (unlaunched & quiet) - poisoned
    return found


def repair(batch_size, min_age_minutes=0.0, launch=True):
    """Re-run the canvas for every object found behind; returns (found, batch ids launched)."""
    found = find_behind(min_age_minutes)
    oids = sorted(set().union(*found.values()))
    batch_ids = []
    if launch:
        for start in range(0, len(oids), batch_size):
            batch_id = f"repair-{new_batch_id()}"
            chunk = oids[start : start + batch_size]
            batches.launch(batch_id, chunk, new_oids=sorted(found["stamp_classifier"].intersection(chunk)))
            batch_ids.append(batch_id)
        cutoff = timezone.now() - timedelta(minutes=min_age_minutes)
        BatchCanvas.objects.filter(
            state__in=[BatchCanvas.NOT_LAUNCHED, BatchCanvas.FAILED], launched__lte=cutoff
        ).exclude(batch_id__in=batch_ids).update(state=BatchCanvas.REPAIRED)
        # A canvas still "queued" whose objects were behind was lost (a broker restarted without its
        # queues): the new batches replace it, so `wait` does not wait for it for ever.
        relaunched = set(oids)
        for record in BatchCanvas.objects.filter(state=BatchCanvas.QUEUED, launched__lte=cutoff).exclude(
            batch_id__in=batch_ids
        ):
            if relaunched.intersection(record.oids):
                record.state, record.error = BatchCanvas.REPAIRED, "objects behind; re-run by repair"
                record.save(update_fields=["state", "error"])
    return found, batch_ids
