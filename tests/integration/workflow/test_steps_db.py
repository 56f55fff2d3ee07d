"""The later steps on the database: cross-match retry, features and their recomputation."""
import io

import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from django.core.management import call_command
from django.db.models import Sum

from pipeline import backends
from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, Feature, MagStats, Object, ObjectFeatureState, Xmatch, XmatchPending
from pipeline.simulation.catalog import simulated_allwise
from pipeline.simulation.night import plan_night, simulate_night
from pipeline.steps.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.workflow import ops_tasks, step_tasks
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


def test_failed_crossmatch_is_queued_then_retried(broker_env):
    night_dir = broker_env / "night"
    simulate_night(night_dir, 40, seed=5)
    catalog = simulated_allwise(plan_night(40, seed=5).objects, seed=5)
    catalog.to_csv(broker_env / "allwise.csv", index=False)

    ingest_paths([night_dir], batch_size=100, progress=False)
    n_objects = Object.objects.count()
    assert XmatchPending.objects.count() == n_objects and not Xmatch.objects.exists()
    assert "load_catalog" in XmatchPending.objects.first().last_error

    call_command("load_catalog", str(broker_env / "allwise.csv"), stdout=io.StringIO())
    backends.xmatch_backend.cache_clear()
    assert ops_tasks.retry_pending_xmatch() == n_objects
    assert not XmatchPending.objects.exists()

    # Independent check: nearest catalogue source within 2 arcsec, by astropy.
    objects = pd.DataFrame(Object.objects.values("oid", "meanra", "meandec"))
    sky = SkyCoord(objects["meanra"].to_numpy() * u.deg, objects["meandec"].to_numpy() * u.deg)
    cat = SkyCoord(catalog["RAJ2000"].to_numpy() * u.deg, catalog["DEJ2000"].to_numpy() * u.deg)
    idx, sep, _ = sky.match_to_catalog_sky(cat)
    expected = {oid: catalog["AllWISE"].iloc[i] for oid, i, s in zip(objects["oid"], idx, sep.arcsec) if s <= 2.0}
    found = dict(Xmatch.objects.values_list("oid", "catid"))
    assert found == expected and len(found) > 5
    for match in Xmatch.objects.all():
        assert match.dist == pytest.approx(sep.arcsec[list(objects["oid"]).index(match.oid_id)], abs=1e-6)


def test_features_are_stored_for_every_object_and_recomputed_on_new_detections(broker_env):
    folder = require_shared("ztf_alerts")
    manifest = pd.read_csv(require_shared("ztf_alerts_manifest.csv"))
    manifest = manifest[manifest["dir"] == "ztf_alerts"]
    repeated = manifest.groupby("objectId").filter(lambda g: len(g) >= 3).sort_values("jd")
    oid = repeated["objectId"].iloc[0]
    packets = [folder / f"{candid}.avro" for candid in repeated[repeated["objectId"] == oid]["candid"]]
    assert all(p.exists() for p in packets)

    ingest_paths(packets[:1], batch_size=10, progress=False)
    state = ObjectFeatureState.objects.get(oid=oid)
    first_ndet = state.ndet
    assert state.version == FEATURE_VERSION and first_ndet == Detection.objects.filter(oid=oid).count()
    rows = Feature.objects.filter(oid=oid, version=FEATURE_VERSION)
    assert rows.count() == len(FEATURE_NAMES)
    # A value is missing exactly where a reason is given.
    assert not rows.filter(value__isnull=True, missing_reason="").exists()
    assert not rows.filter(value__isnull=False).exclude(missing_reason="").exists()
    n_det_g = Detection.objects.filter(oid=oid, fid=1).count()
    stored = rows.get(name="n_det_1")
    assert (stored.value is None and n_det_g == 0) or stored.value <= n_det_g

    assert step_tasks.features.run("again", [oid])["n"] == 0  # nothing new: not recomputed
    ingest_paths(packets[1:], batch_size=10, progress=False)
    state.refresh_from_db()
    assert state.ndet == Detection.objects.filter(oid=oid).count() > first_ndet
    assert Feature.objects.filter(oid=oid).count() == len(FEATURE_NAMES)
    assert MagStats.objects.filter(oid=oid).aggregate(n=Sum("ndet"))["n"] == state.ndet


def test_alert_crossmatches_keep_the_newest_alert(broker_env):
    """PS1/Gaia/solar-system rows come from the newest alert, whatever the order of ingestion."""
    import fastavro

    from pipeline.models import Gaia, Ps1

    folder = require_shared("ztf_alerts")
    manifest = pd.read_csv(require_shared("ztf_alerts_manifest.csv"))
    manifest = manifest[(manifest["dir"] == "ztf_alerts") & (manifest["schemavsn"].astype(str) != "3.3")]
    oid, group = next((oid, g.sort_values("jd")) for oid, g in manifest.groupby("objectId") if len(g) >= 2)
    packets = [folder / f"{candid}.avro" for candid in group["candid"]]
    newest = packets[-1]
    with open(newest, "rb") as fh:
        candidate = next(fastavro.reader(fh))["candidate"]

    ingest_paths([newest], batch_size=10, progress=False)
    ingest_paths(packets[:-1], batch_size=10, progress=False)  # older alerts later
    ps1 = Ps1.objects.get(oid=oid)
    assert ps1.candid == candidate["candid"] and ps1.objectidps1 == candidate["objectidps1"]
    assert Gaia.objects.get(oid=oid).candid == candidate["candid"]
    assert Object.objects.get(oid=oid).ndethist == candidate["ndethist"]


def test_reprocess_rebuilds_what_the_steps_write(broker_env):
    night_dir = broker_env / "night"
    simulate_night(night_dir, 12, seed=9)
    ingest_paths([night_dir], batch_size=100, progress=False)
    assert not Object.objects.filter(simulated=False).exists()  # every ZTFSIM object is marked simulated
    n_magstats, n_features = MagStats.objects.count(), Feature.objects.count()
    assert n_magstats and n_features == Object.objects.count() * len(FEATURE_NAMES)

    MagStats.objects.all().delete()
    ObjectFeatureState.objects.all().delete()
    Feature.objects.all().delete()
    out = io.StringIO()
    call_command("reprocess", "--all", "--batch-size", "5", stdout=out)
    assert "reprocessed 12 objects in 3 batches" in out.getvalue()
    assert MagStats.objects.count() == n_magstats and Feature.objects.count() == n_features
    with pytest.raises(Exception, match="unknown objects"):
        call_command("reprocess", "ZTF99zzzzzzz")
