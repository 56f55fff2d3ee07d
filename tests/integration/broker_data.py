"""A small broker database for the API and dashboard tests: a simulated night and (where ../shared/data is
present) real ZTF packets, ingested through the pipeline, plus classifier outputs written as fixtures
(the classifiers are built elsewhere; these rows only have the tables' shape)."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.test import override_settings

from pipeline import backends
from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, Object, OutlierScore, Probability, Quarantine
from pipeline.simulation.night import simulate_night
from tests.conftest import SHARED_DATA

SIM_OBJECTS, SIM_SEED = 16, 7
LC_CLASSES = ("SNIa", "SNIbc", "SNII", "SLSN", "QSO", "AGN", "Blazar", "CV/Nova", "YSO", "LPV", "E", "DSCT",
              "RRL", "CEP", "Periodic-Other")
TOP_CLASSES = ("Transient", "Stochastic", "Periodic")
STAMP_CLASSES = ("SN", "AGN", "VS", "asteroid", "bogus")
LC_VERSION, STAMP_VERSION, OUTLIER_VERSION = "fixture-lc-1.0", "fixture-stamp-1.0", "fixture-outlier-1.0"
FAILED_STEP = "lc_classifier"  # the step name run_isolating quarantines under


def real_packets(n_single=3):
    """Packets of the real object with most alerts in ../shared/data/ztf_alerts, plus a few single alerts."""
    manifest_path = SHARED_DATA / "ztf_alerts_manifest.csv"
    if not manifest_path.exists():
        return []
    manifest = pd.read_csv(manifest_path)
    manifest = manifest[manifest["dir"] == "ztf_alerts"].sort_values(["objectId", "jd"])
    counts = manifest.groupby("objectId").size().sort_values(ascending=False, kind="stable")
    many = counts.index[0]
    singles = [oid for oid in counts.index if counts[oid] == 1][:n_single]
    chosen = manifest[manifest["objectId"].isin([many, *singles])]
    return [SHARED_DATA / "ztf_alerts" / f"{candid}.avro" for candid in chosen["candid"]]


def _probabilities(seed_text, classes, rng_tag):
    digest = hashlib.sha256(f"{seed_text}/{rng_tag}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    p = rng.dirichlet(np.full(len(classes), 0.4))
    return p / p.sum()


def write_probability_rows(oid):
    """Fixture outputs of every classifier for one object: each classifier's probabilities sum to 1."""
    rows = []

    def add(name, version, classes, p):
        order = np.argsort(-p, kind="stable")
        for rank, i in enumerate(order, start=1):
            rows.append(Probability(oid_id=oid, classifier_name=name, classifier_version=version,
                                    class_name=classes[i], probability=float(p[i]), ranking=rank))

    add("lc_classifier", LC_VERSION, LC_CLASSES, _probabilities(oid, LC_CLASSES, "lc"))
    top = _probabilities(oid, TOP_CLASSES, "top")
    add("lc_classifier_top", LC_VERSION, TOP_CLASSES, top)
    for branch, classes in (("transient", LC_CLASSES[:4]), ("stochastic", LC_CLASSES[4:9]),
                            ("periodic", LC_CLASSES[9:])):
        add(f"lc_classifier_{branch}", LC_VERSION, classes, _probabilities(oid, classes, branch))
    add("stamp_classifier", STAMP_VERSION, STAMP_CLASSES, _probabilities(oid, STAMP_CLASSES, "stamp"))
    Probability.objects.bulk_create(rows)
    branch = TOP_CLASSES[int(np.argmax(top))]
    score = float(_probabilities(oid, (0, 1), "outlier")[0])
    OutlierScore.objects.create(oid_id=oid, version=OUTLIER_VERSION, branch=branch, score=score,
                                is_outlier=score > 0.8)


def build(folder):
    """Ingest the data into the current database; returns a dict of the oids the tests look at."""
    night = folder / "night"
    simulate_night(night, SIM_OBJECTS, seed=SIM_SEED)
    paths = [night] + real_packets()
    ingest_paths(paths, batch_size=200, progress=False)
    # The tests choose each object's classes, an unclassified one and a failed one: fixture rows
    # replace what the real classifiers wrote (those are tested in test_lc_classifier_db.py).
    Probability.objects.all().delete()
    OutlierScore.objects.all().delete()
    oids = list(Object.objects.order_by("-ndet", "oid").values_list("oid", flat=True))
    unclassified = oids[-1]
    failed = oids[1]
    for oid in oids:
        if oid not in (unclassified, failed):
            write_probability_rows(oid)
    Quarantine.objects.create(sha256="0" * 64, reason="classifier raised ValueError: NaN in features",
                              source="fixture", oid=failed, step=FAILED_STEP)
    real = [o for o in oids if not o.startswith("ZTFSIM")]
    stamped = Detection.objects.filter(has_stamp=True, oid__in=oids).order_by("-oid__ndet", "candid")
    return {
        "all": oids, "unclassified": unclassified, "failed": failed, "real": real,
        "rich": oids[0], "stamped_candid": stamped.values_list("candid", flat=True).first(),
    }


@pytest.fixture(scope="module")
def broker_db(django_db_setup, django_db_blocker, tmp_path_factory):
    """The data above, built once per test module (tests run in transactions rolled back on top of it)."""
    folder = tmp_path_factory.mktemp("broker")
    overrides = override_settings(ALERT_ARCHIVE_URL=str(folder / "archive"),
                                  XMATCH_LOCAL_INDEX=str(folder / "catalogs" / "allwise.npz"))
    with django_db_blocker.unblock(), overrides:
        backends.archive.cache_clear()
        backends.xmatch_backend.cache_clear()
        try:
            yield build(folder)
        finally:
            call_command("flush", interactive=False, verbosity=0)
            backends.archive.cache_clear()
            backends.xmatch_backend.cache_clear()


@pytest.fixture
def live_server_db_connections():
    """Requests of the live server close their database connection when they end (no persistent connection
    outlives its thread and blocks dropping the PostgreSQL test database)."""
    from django.db import connections

    saved = connections.settings["default"].get("CONN_MAX_AGE", 0)
    connections.settings["default"]["CONN_MAX_AGE"] = 0
    yield
    connections.settings["default"]["CONN_MAX_AGE"] = saved
