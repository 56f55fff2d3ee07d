"""The `cds` cross-match backend through the real astroquery client, over HTTP, against a local
stand-in of the CDS X-Match API (no internet here): same matches as the `local` backend."""
import numpy as np
import pandas as pd
import pytest

from pipeline.steps.xmatch import (
    ALLWISE_PHOTOMETRY, CdsXmatchBackend, LocalCatalogBackend, XmatchUnavailable, build_local_index,
)
from tests.integration.cds_standin import CdsStandIn


def offset(ra, dec, arcsec, angle_deg):
    angle = np.radians(angle_deg)
    return (ra + arcsec / 3600 * np.sin(angle) / np.cos(np.radians(dec))) % 360, dec + arcsec / 3600 * np.cos(angle)


@pytest.fixture
def sky():
    """Objects, and an AllWISE-like catalogue with sources at known offsets from them."""
    objects = pd.DataFrame({
        "oid": ["ZTF20aaaaaaa", "ZTF20aaaaaab", "ZTF20aaaaaac", "ZTF20aaaaaad", "ZTF20aaaaaae"],
        "ra": [10.0, 359.99995, 150.0, 200.0, 45.0],
        "dec": [20.0, -5.0, 89.9995, -30.0, 0.0],
    })
    rows = []
    for (oid, ra, dec), sep, angle in zip(objects.itertuples(index=False), [1.9, 0.5, 1.2, 2.1, 0.3], [30, 90, 200, 0, 270]):
        rows.append(offset(ra, dec, sep, angle))
    rows.append(offset(45.0, 0.0, 1.5, 10))  # a farther second source: the nearest must win
    rng = np.random.default_rng(3)
    catalog = pd.DataFrame(rows, columns=["RAJ2000", "DEJ2000"])
    catalog.insert(0, "AllWISE", [f"J{i:06d}.00+000000.0" for i in range(len(catalog))])
    for name in ALLWISE_PHOTOMETRY:
        catalog[name] = rng.uniform(0.02, 0.2, len(catalog)) if name.startswith("e_") else rng.uniform(10, 16, len(catalog))
    return objects, catalog


def test_cds_backend_matches_like_the_local_backend(sky, tmp_path):
    objects, catalog = sky
    build_local_index(catalog, tmp_path / "index.npz")
    local = LocalCatalogBackend(tmp_path / "index.npz").match(objects, radius_arcsec=2.0)
    with CdsStandIn(catalog) as cds:
        remote = CdsXmatchBackend(url=cds.url, timeout=10, retries=0).match(objects, radius_arcsec=2.0)
        posts = [fields for method, _, fields in cds.requests if method == "POST"]
    assert posts and posts[0]["cat2"] == "vizier:II/328/allwise" and float(posts[0]["distMaxArcsec"]) == 2.0

    assert set(remote["oid"]) == {"ZTF20aaaaaaa", "ZTF20aaaaaab", "ZTF20aaaaaac", "ZTF20aaaaaae"}
    merged = local.merge(remote, on="oid", suffixes=("_local", "_cds"))
    assert len(merged) == len(local) == len(remote)
    assert (merged["catid_local"] == merged["catid_cds"]).all()
    assert np.allclose(merged["dist_local"], merged["dist_cds"], atol=1e-6)
    for name in ALLWISE_PHOTOMETRY:
        assert np.allclose(merged[f"{name}_local"], merged[f"{name}_cds"], rtol=1e-6)


def test_cds_backend_retries_then_gives_up_with_the_unanswered_objects(sky):
    objects, catalog = sky
    with CdsStandIn(catalog) as cds:
        cds.failures_left = 1  # one 503, then a good answer
        matches = CdsXmatchBackend(url=cds.url, timeout=10, retries=1, sleep=lambda s: None).match(objects)
        assert len(matches) == 4 and cds.failures_left == 0
        url = cds.url
    with pytest.raises(XmatchUnavailable) as failure:  # the service is gone: refused connections
        CdsXmatchBackend(url=url, timeout=2, retries=1, sleep=lambda s: None).match(objects)
    assert sorted(failure.value.oids) == sorted(objects["oid"])


@pytest.mark.django_db(transaction=True)
def test_pipeline_with_the_cds_backend(broker_env, settings, tmp_path):
    """XMATCH_BACKEND=cds end to end: ingest a simulated night, the xmatch task asks the service."""

    from pipeline import backends
    from pipeline.ingest.runner import ingest_paths
    from pipeline.models import Object, Xmatch, XmatchPending
    from pipeline.simulation.catalog import simulated_allwise
    from pipeline.simulation.night import plan_night, simulate_night

    simulate_night(tmp_path / "night", 30, seed=4)
    catalog = simulated_allwise(plan_night(30, seed=4).objects, seed=4)
    with CdsStandIn(catalog) as cds:
        settings.XMATCH_BACKEND, settings.XMATCH_CDS_URL = "cds", cds.url
        backends.xmatch_backend.cache_clear()
        ingest_paths([tmp_path / "night"], batch_size=100, progress=False)
    build_local_index(catalog, tmp_path / "index.npz")
    objects = pd.DataFrame(Object.objects.values("oid", "meanra", "meandec")).rename(columns={"meanra": "ra", "meandec": "dec"})
    expected = LocalCatalogBackend(tmp_path / "index.npz").match(objects)
    assert dict(Xmatch.objects.values_list("oid", "catid")) == dict(zip(expected["oid"], expected["catid"]))
    assert len(expected) > 5 and not XmatchPending.objects.exists()
