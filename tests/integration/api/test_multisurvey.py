"""The public alerce client (2.3.x, its multisurvey routes) reading our Rubin objects over real HTTP."""
import io
import json
import math
from pathlib import Path

import pytest

from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, ForcedPhotometry, Object, Probability
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alerce(live_server, tmp_path, monkeypatch):
    alerce_pkg = pytest.importorskip("alerce", reason="the alerce client is not installed")
    config = json.loads((Path(alerce_pkg.__file__).parent / "default_config.json").read_text())
    assert set(config["multisurvey"]["ROUTES_MS"]) >= {"objects", "single_object", "detections", "lightcurve",
                                                       "non_detections", "forced_photometry", "probabilities"}
    config["multisurvey"]["URL_MS"] = f"{live_server.url}/multisurvey/"
    config["stamps"]["STAMP_URL"] = f"{live_server.url}/multisurvey/stamps_api"
    path = tmp_path / "alerce_config.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("ALERCE_CONFIG_PATH", str(path))
    from alerce.core import Alerce

    return Alerce()


@pytest.fixture
def rubin_objects(broker_env):
    folders = [require_shared("lsst_alerts", name) for name in ("rubin_v7_4", "rubin_v9_0", "rubin_v10_0", "elasticc_v0_9")]
    ingest_paths(folders, batch_size=50, pipeline=True, progress=False)
    return Object.objects.filter(survey="lsst")


def test_alerce_client_reads_rubin_objects(alerce, rubin_objects):
    obj = Object.objects.filter(survey="lsst").order_by("-ndet", "oid").first()
    assert obj.ndet > 1
    got = alerce.query_object(int(obj.oid), survey="lsst", format="json")
    assert got["oid"] == obj.oid and got["n_det"] == obj.ndet and got["meanra"] == pytest.approx(obj.meanra)

    detections = alerce.query_detections(int(obj.oid), survey="lsst", format="json")
    stored = Detection.objects.filter(oid=obj)
    assert sorted(d["measurement_id"] for d in detections) == sorted(stored.values_list("candid", flat=True))
    for d in detections:
        assert d["band_name"] in "ugrizy" and d["band_name"] == "ugrizy"[d["band"] - 10]
        assert d["mag"] == pytest.approx(31.4 - 2.5 * math.log10(abs(d["psfFlux"])))

    frame = alerce.query_detections(int(obj.oid), survey="lsst", format="pandas")
    assert len(frame) == stored.count() and "band_name" in frame.columns

    lightcurve = alerce.query_lightcurve(int(obj.oid), survey="lsst", format="json")
    assert len(lightcurve["detections"]) == stored.count()
    assert alerce.query_non_detections(int(obj.oid), survey="lsst", format="json") == lightcurve["non_detections"]


def test_alerce_client_forced_photometry_and_probabilities(alerce, rubin_objects):
    with_fp = ForcedPhotometry.objects.filter(survey="lsst").values_list("oid", flat=True).first()
    assert with_fp is not None
    rows = alerce.query_forced_photometry(int(with_fp), survey="lsst", format="json")
    assert len(rows) == ForcedPhotometry.objects.filter(oid=with_fp).count()
    assert all(r["band_name"] in "ugrizy" and r["zero_point"] == 31.4 for r in rows)

    target = rubin_objects.order_by("oid").first()
    for rank, (name, p) in enumerate((("SN", 0.7), ("AGN", 0.2), ("VS", 0.1)), start=1):
        Probability.objects.create(oid=target, classifier_name="stamp_classifier_rubin", classifier_version="1",
                                   class_name=name, probability=p, ranking=rank)
    probs = alerce.query_probabilities(int(target.oid), survey="lsst", format="json")
    assert [(p["class_name"], p["ranking"]) for p in probs] == [("SN", 1), ("AGN", 2), ("VS", 3)]
    assert sum(p["probability"] for p in probs) == pytest.approx(1.0)

    listed = alerce.query_objects(survey="lsst", format="json", classifier="stamp_classifier_rubin",
                                  class_name="SN")
    assert [(o["oid"], o["class_name"], o["probability"]) for o in listed] == [(target.oid, "SN", 0.7)]
    page = alerce.query_objects(survey="lsst", format="json", page_size=5, order_by="n_det", order_mode="DESC")
    assert len(page) == 5 and [o["n_det"] for o in page] == sorted((o["n_det"] for o in page), reverse=True)
    assert page[0]["n_det"] == max(rubin_objects.values_list("ndet", flat=True))
    several = alerce.query_objects(survey="lsst", format="json", page_size=100, n_det=[2, 100])
    assert {o["oid"] for o in several} == set(rubin_objects.filter(ndet__gte=2).values_list("oid", flat=True))


def test_unknown_object_and_survey_are_refused(alerce, rubin_objects, client):
    from alerce.exceptions import APIError

    with pytest.raises(APIError):
        alerce.query_object(1, survey="lsst", format="json")
    assert client.get("/multisurvey/object_api/object", {"survey_id": "atlas", "oid": "1"}).status_code == 400


def test_alerce_client_gets_rubin_stamps_and_packets(alerce, rubin_objects, client):
    import fastavro
    import numpy as np
    from alerce.ms_stamps import AlerceStampsMultisurvey

    from pipeline.models import RawAlert

    raw = RawAlert.objects.filter(schemavsn="10.0").order_by("candid").first()
    stamps = AlerceStampsMultisurvey()
    images = stamps.multisurvey_get_stamps("lsst", int(raw.oid), out_format="numpy")
    packet = require_shared("lsst_alerts", "rubin_v10_0", f"{raw.candid}.avro").read_bytes()
    record = next(fastavro.reader(io.BytesIO(packet)))
    from pipeline.surveys.ztf import cutout_image

    for image, name in zip(images, ("cutoutScience", "cutoutTemplate", "cutoutDifference")):
        expected = cutout_image(record[name])
        assert image.shape == expected.shape and np.array_equal(image, expected, equal_nan=True)
    assert stamps.multisurvey_get_avro("lsst", int(raw.oid)) == packet
    png = client.get("/multisurvey/stamps_api/stamp", {"measurement_id": raw.candid, "stamp_type": "cutoutScience",
                                                        "file_format": "png", "survey_id": "lsst"})
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    image_module = pytest.importorskip("PIL.Image", reason="Pillow (an alerce dependency) is not installed")
    assert image_module.open(io.BytesIO(png.content)).size == images[0].shape[::-1]
