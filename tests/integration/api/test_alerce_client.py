"""The public ``alerce`` client (PyPI 2.3.x, unchanged) against a live server of this broker.

The client reads its URLs from ``ALERCE_CONFIG_PATH`` when it is imported, so the test writes a config
pointing at the live server and imports the client fresh.
"""
import io
import json
import sys
import warnings

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from pipeline.models import Detection, Feature, ForcedPhotometry, MagStats, NonDetection, Object, Probability
from tests.integration.broker_data import LC_VERSION, broker_db, live_server_db_connections  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def fresh_client(config_path, monkeypatch):
    monkeypatch.setenv("ALERCE_CONFIG_PATH", str(config_path))
    for name in [m for m in sys.modules if m == "alerce" or m.startswith("alerce.")]:
        monkeypatch.delitem(sys.modules, name)
    from alerce.core import Alerce

    return Alerce()


def test_alerce_client_every_ztf_method(broker_db, live_server_db_connections, live_server, tmp_path, monkeypatch, client):
    config = client.get("/ztf/v1/alerce_config.json").json()  # the served config, re-pointed at the server
    config["ztf"]["ZTF_API_URL"] = live_server.url
    config["stamps_ztf"]["AVRO_URL"] = live_server.url
    (tmp_path / "alerce.json").write_text(json.dumps(config))
    alerce = fresh_client(tmp_path / "alerce.json", monkeypatch)
    from alerce.exceptions import ObjectNotFoundError, ParseError

    oid = broker_db["rich"]
    warnings.simplefilter("ignore", DeprecationWarning)

    # query_objects in the three formats, with every filter
    expected = set(Probability.objects.filter(classifier_name="lc_classifier", ranking=1)
                   .values_list("oid", flat=True))
    as_json = alerce.query_objects(survey="ztf", format="json", classifier="lc_classifier", page_size=100)
    assert {i["oid"] for i in as_json["items"]} == expected and as_json["page"] == 1
    frame = alerce.query_objects(survey="ztf", format="pandas", classifier="lc_classifier", page_size=100,
                                 index="oid", sort="ndet")
    assert isinstance(frame, pd.DataFrame) and set(frame.index) == expected
    assert list(frame["ndet"]) == sorted(frame["ndet"])
    table = alerce.query_objects(survey="ztf", format="votable", classifier="lc_classifier", page_size=100)
    assert isinstance(table, Table) and set(table["oid"]) == expected
    obj = Object.objects.get(oid=oid)
    top = Probability.objects.get(oid=oid, classifier_name="lc_classifier", ranking=1)
    hit = alerce.query_objects(survey="ztf", format="pandas", classifier="lc_classifier",
                               class_name=top.class_name, probability=top.probability - 1e-9,
                               ndet=[obj.ndet, obj.ndet], firstmjd=[obj.firstmjd - 1e-6, obj.firstmjd + 1e-6],
                               lastmjd=[obj.lastmjd - 1e-6, obj.lastmjd + 1e-6],
                               ra=obj.meanra, dec=obj.meandec, radius=5, page=1, page_size=10,
                               order_by="probability", order_mode="DESC", count="true")
    assert list(hit["oid"]) == [oid] and hit["class"].iloc[0] == top.class_name
    listed = alerce.query_objects(survey="ztf", format="json", oid=broker_db["all"][:3], count=True)
    assert listed["total"] == 3
    with pytest.raises(ParseError):
        alerce.query_objects(survey="ztf", format="json", page_size=10**6)

    # one object and its light curve
    assert alerce.query_object(oid, survey="ztf", format="json")["ndet"] == obj.ndet
    assert alerce.query_object(oid, survey="ztf", format="pandas")["oid"].iloc[0] == oid
    with pytest.raises(ObjectNotFoundError):
        alerce.query_object("ZTF00nothere", survey="ztf")
    lc = alerce.query_lightcurve(oid, survey="ztf", format="json")
    assert len(lc["detections"]) == Detection.objects.filter(oid=oid).count()
    assert len(lc["non_detections"]) == NonDetection.objects.filter(oid=oid).count()
    dets = alerce.query_detections(oid, survey="ztf", format="pandas", sort="mjd")
    assert len(dets) == Detection.objects.filter(oid=oid).count() and dets["mjd"].is_monotonic_increasing
    assert isinstance(alerce.query_detections(oid, survey="ztf", format="votable"), Table)
    as_csv = alerce.query_detections(oid, survey="ztf", format="csv")
    assert as_csv.splitlines()[0].split(",")[:3] == list(dets.columns[:3])
    assert len(as_csv.strip().splitlines()) == len(dets) + 1
    limits = alerce.query_non_detections(oid, survey="ztf", format="pandas")
    assert len(limits) == NonDetection.objects.filter(oid=oid).count()
    fp_oid = ForcedPhotometry.objects.values_list("oid", flat=True).first()
    forced = alerce.query_forced_photometry(fp_oid, survey="ztf", format="pandas")
    assert len(forced) == ForcedPhotometry.objects.filter(oid=fp_oid).count() > 0
    assert "forcediffimflux" in forced.columns and "extra_fields" not in forced.columns
    forced_json = alerce.query_forced_photometry(fp_oid, survey="ztf", format="json")
    assert len(forced_json) == len(forced) and "extra_fields" not in forced_json[0]

    # statistics, classes, features
    stats = alerce.query_magstats(oid, survey="ztf", format="pandas")
    assert sorted(stats["fid"]) == sorted(MagStats.objects.filter(oid=oid).values_list("fid", flat=True))
    probs = alerce.query_probabilities(oid, survey="ztf", format="pandas")
    assert len(probs) == Probability.objects.filter(oid=oid).count()
    assert np.allclose(probs.groupby("classifier_name")["probability"].sum(), 1.0)
    features = alerce.query_features(oid, survey="ztf", format="pandas")
    assert len(features) == Feature.objects.filter(oid=oid).count()
    one = alerce.query_feature(oid, "Amplitude_1", survey="ztf", format="json")
    assert one[0]["value"] == Feature.objects.get(oid=oid, name="Amplitude_1").value
    classifiers = alerce.query_classifiers(survey="ztf", format="json")
    assert "stamp_classifier" in {c["classifier_name"] for c in classifiers}
    classes = alerce.query_classes("lc_classifier", LC_VERSION, survey="ztf", format="json")
    assert {c["name"] for c in classes} == set(Probability.objects.filter(classifier_name="lc_classifier")
                                              .values_list("class_name", flat=True))

    # stamps (FITS through the client's gunzip) and the raw packet; candid=None takes the first stamped alert
    candid = broker_db["stamped_candid"]
    stamp_oid = Detection.objects.get(candid=candid).oid_id
    hdus = alerce.get_stamps(stamp_oid, candid, survey="ztf")
    assert [h.header["STAMP_TYPE"] for h in hdus] == ["science", "template", "difference"]
    assert all(h.data.ndim == 2 for h in hdus)
    arrays = alerce.get_stamps(stamp_oid, survey="ztf", format="numpy")
    assert len(arrays) == 3 and arrays[0].shape == hdus[0].data.shape
    packet = alerce.get_avro(stamp_oid, candid, survey="ztf")
    assert next(fastavro.reader(io.BytesIO(packet)))["candid"] == candid
    first = Detection.objects.filter(oid=stamp_oid, has_stamp=True).order_by("candid").first().candid
    assert next(fastavro.reader(io.BytesIO(alerce.get_avro(stamp_oid, survey="ztf"))))["candid"] == first
    # close the client's keep-alive connections while the server still runs
    for part in (alerce.legacy_ztf_client, alerce.legacy_stamps_client, alerce.legacy_stamps_client.search_client):
        part.session.close()
