"""The ZTF API v1 routes through Django's test client: shapes, filters, bounds and JSON errors."""
import gzip
import io

import fastavro
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from django.contrib.auth.models import User
from django.db.models import Count

from pipeline.api.queries import MAX_CONE_RADIUS_ARCSEC, MAX_PAGE_SIZE
from pipeline.models import Detection, Feature, MagStats, NonDetection, Object, Probability
from tests.integration.broker_data import LC_VERSION, broker_db  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def get(client, url, **params):
    return client.get(url, params)


def test_objects_page_shape_and_pagination(client, broker_db):
    n = len(broker_db["all"])
    first = get(client, "/ztf/v1/objects", page_size=5, count="true", order_by="oid").json()
    assert set(first) == {"total", "page", "next", "has_next", "prev", "has_prev", "items"}
    assert first["total"] == n and first["page"] == 1 and first["has_next"] and first["next"] == 2
    assert first["prev"] is None and not first["has_prev"]
    oids = sorted(broker_db["all"])
    assert [i["oid"] for i in first["items"]] == oids[:5]
    last_page = (n + 4) // 5
    last = get(client, "/ztf/v1/objects", page_size=5, page=last_page, order_by="oid").json()
    assert [i["oid"] for i in last["items"]] == oids[(last_page - 1) * 5:]
    assert not last["has_next"] and last["has_prev"] and last["prev"] == last_page - 1 and last["total"] is None
    item = first["items"][0]
    # the default class row is lc_classifier's top class, as in ALeRCE's API
    top = Probability.objects.filter(oid=item["oid"], classifier_name="lc_classifier", ranking=1).first()
    assert (item["class"], item["classifier"]) == ((top.class_name, "lc_classifier") if top else (None, None))


def test_objects_class_and_probability_filters(client, broker_db):
    confident = Probability.objects.filter(classifier_name="stamp_classifier", ranking=1, probability__gte=0.5)
    commonest = confident.values("class_name").annotate(n=Count("id")).order_by("-n", "class_name").first()
    assert commonest, "the test night has no stamp class at probability >= 0.5"
    cls = commonest["class_name"]
    expected = set(confident.filter(class_name=cls).values_list("oid", flat=True))
    page = get(client, "/ztf/v1/objects", classifier="stamp_classifier", **{"class": cls}, probability=0.5,
               page_size=100).json()
    assert {i["oid"] for i in page["items"]} == expected
    assert all(i["class"] == cls and i["probability"] >= 0.5 and i["classifier"] == "stamp_classifier"
               for i in page["items"])
    # class_name (the client's keyword) is accepted too
    again = get(client, "/ztf/v1/objects", classifier="stamp_classifier", class_name=cls, probability=0.5,
                page_size=100).json()
    assert again["items"] == page["items"]


def test_objects_ndet_and_date_ranges(client, broker_db):
    objs = list(Object.objects.values("oid", "ndet", "firstmjd", "lastmjd"))
    ndets = sorted(o["ndet"] for o in objs)
    low, high = ndets[len(ndets) // 4], ndets[3 * len(ndets) // 4]
    page = client.get("/ztf/v1/objects", {"ndet": [low, high], "page_size": 100}).json()
    assert {i["oid"] for i in page["items"]} == {o["oid"] for o in objs if low <= o["ndet"] <= high}
    page = client.get("/ztf/v1/objects", {"ndet": [high], "page_size": 100}).json()
    assert {i["oid"] for i in page["items"]} == {o["oid"] for o in objs if o["ndet"] >= high}
    first = sorted(o["firstmjd"] for o in objs)
    a, b = first[2], first[-3]
    page = client.get("/ztf/v1/objects", {"firstmjd": [a, b], "page_size": 100}).json()
    assert {i["oid"] for i in page["items"]} == {o["oid"] for o in objs if a <= o["firstmjd"] <= b}
    last = sorted(o["lastmjd"] for o in objs)
    page = client.get("/ztf/v1/objects", {"lastmjd": [last[3]], "page_size": 100}).json()
    assert {i["oid"] for i in page["items"]} == {o["oid"] for o in objs if o["lastmjd"] >= last[3]}


@pytest.mark.parametrize("ra, dec", [(0.0, 10.0), (180.0, -45.0), (90.0, 89.999)])
def test_objects_cone_search_matches_astropy(client, broker_db, ra, dec):
    # neighbours at known offsets, across RA 0/360 and near the pole too
    rng = np.random.default_rng(3)
    centre = SkyCoord(ra * u.deg, dec * u.deg)
    offsets = rng.uniform(0, 60, 12)  # arcsec
    angles = rng.uniform(0, 360, 12)
    made = []
    for i, (sep, pa) in enumerate(zip(offsets, angles)):
        p = centre.directional_offset_by(pa * u.deg, sep * u.arcsec)
        made.append(Object.objects.create(oid=f"ZTF99cone{i:03d}", meanra=p.ra.deg, meandec=p.dec.deg, ndet=1))
    coords = SkyCoord([o.meanra for o in made] * u.deg, [o.meandec for o in made] * u.deg)
    true_sep = coords.separation(centre).arcsec
    for radius in (20.0, 45.0):
        page = get(client, "/ztf/v1/objects", ra=ra, dec=dec, radius=radius, page_size=100).json()
        expected = {o.oid for o, s in zip(made, true_sep) if s <= radius}
        assert {i["oid"] for i in page["items"]} == expected and expected
    # ALeRCE's default radius is 30 arcsec
    page = get(client, "/ztf/v1/objects", ra=ra, dec=dec, page_size=100).json()
    assert {i["oid"] for i in page["items"]} == {o.oid for o, s in zip(made, true_sep) if s <= 30}


def test_objects_cone_on_stored_object(client, broker_db):
    obj = Object.objects.get(oid=broker_db["rich"])
    tiny = get(client, "/ztf/v1/objects", ra=obj.meanra, dec=obj.meandec, radius=0.01).json()
    assert [i["oid"] for i in tiny["items"]] == [obj.oid]


def test_objects_oid_list_wildcard_and_ordering(client, broker_db):
    some = broker_db["all"][:3]
    page = client.get("/ztf/v1/objects", {"oid": some}).json()
    assert sorted(i["oid"] for i in page["items"]) == sorted(some)
    sim = get(client, "/ztf/v1/objects", oid="ZTFSIM*", page_size=100).json()
    assert {i["oid"] for i in sim["items"]} == {o for o in broker_db["all"] if o.startswith("ZTFSIM")}
    desc = get(client, "/ztf/v1/objects", order_by="ndet", order_mode="DESC", page_size=100).json()
    ndets = [i["ndet"] for i in desc["items"]]
    assert ndets == sorted(ndets, reverse=True) and len(ndets) == len(broker_db["all"])
    by_prob = get(client, "/ztf/v1/objects", classifier="lc_classifier", order_by="probability",
                  order_mode="ASC", page_size=100).json()
    probs = [i["probability"] for i in by_prob["items"]]
    assert probs == sorted(probs) and len(probs) == Probability.objects.filter(
        classifier_name="lc_classifier", ranking=1).count()


@pytest.mark.parametrize("params, bad", [
    ({"page_size": MAX_PAGE_SIZE + 1}, "page_size"),
    ({"page_size": "ten"}, "page_size"),
    ({"page": 0}, "page"),
    ({"ra": 10, "dec": 5, "radius": MAX_CONE_RADIUS_ARCSEC + 1}, "radius"),
    ({"ra": 10}, "dec"),
    ({"ra": 400, "dec": 0}, "ra"),
    ({"ndet": [9, 2]}, "ndet"),
    ({"ndet": [1, 2, 3]}, "ndet"),
    ({"firstmjd": "yesterday"}, "firstmjd"),
    ({"probability": 1.5}, "probability"),
    ({"order_by": "password"}, "order_by"),
    ({"order_mode": "SIDEWAYS"}, "order_mode"),
    ({"count": "perhaps"}, "count"),
])
def test_objects_bad_parameters_are_json_400(client, broker_db, params, bad):
    response = client.get("/ztf/v1/objects", params)
    assert response.status_code == 400
    body = response.json()
    assert bad in body["errors"] and bad in body["detail"]


def test_single_object_and_404(client, broker_db):
    oid = broker_db["rich"]
    body = get(client, f"/ztf/v1/objects/{oid}").json()
    obj = Object.objects.get(oid=oid)
    assert body["oid"] == oid and body["ndet"] == obj.ndet and body["meanra"] == pytest.approx(obj.meanra)
    for route in ("", "/detections", "/non_detections", "/lightcurve", "/magstats", "/probabilities",
                  "/features", "/features/Amplitude_1"):
        response = client.get(f"/ztf/v1/objects/ZTF00nothere{route}")
        assert response.status_code == 404 and "ZTF00nothere" in response.json()["detail"], route
    assert client.get("/ztf/v1/no_such_route").json()["detail"].startswith("no API route")


def test_detections_non_detections_and_lightcurve(client, broker_db):
    oid = broker_db["rich"]
    dets = get(client, f"/ztf/v1/objects/{oid}/detections").json()
    assert len(dets) == Detection.objects.filter(oid=oid).count() > 5
    assert [d["mjd"] for d in dets] == sorted(d["mjd"] for d in dets)
    stored = {d.candid: d for d in Detection.objects.filter(oid=oid)}
    for d in dets:
        row = stored[int(d["candid"])]
        assert isinstance(d["candid"], str)
        assert (d["fid"], d["magpsf"], d["magpsf_corr"], d["dubious"], d["has_stamp"]) == (
            row.fid, row.magpsf, row.magpsf_corr, row.dubious, row.has_stamp)
    limits = get(client, f"/ztf/v1/objects/{oid}/non_detections").json()
    assert len(limits) == NonDetection.objects.filter(oid=oid).count()
    assert all(set(row) == {"mjd", "fid", "diffmaglim"} for row in limits)
    lc = get(client, f"/ztf/v1/objects/{oid}/lightcurve").json()
    assert lc == {"detections": dets, "non_detections": limits}


def test_magstats_and_probabilities(client, broker_db):
    oid = broker_db["rich"]
    stats = get(client, f"/ztf/v1/objects/{oid}/magstats").json()
    assert [s["fid"] for s in stats] == sorted(MagStats.objects.filter(oid=oid).values_list("fid", flat=True))
    ms = MagStats.objects.get(oid=oid, fid=stats[0]["fid"])
    assert stats[0]["magmean"] == pytest.approx(ms.magmean) and stats[0]["ndet"] == ms.ndet

    probs = get(client, f"/ztf/v1/objects/{oid}/probabilities").json()
    assert set(probs[0]) == {"classifier_name", "classifier_version", "class_name", "probability", "ranking"}
    by_classifier = {}
    for p in probs:
        by_classifier.setdefault(p["classifier_name"], []).append(p)
    assert set(by_classifier) == {"lc_classifier", "lc_classifier_top", "lc_classifier_transient",
                                  "lc_classifier_stochastic", "lc_classifier_periodic", "stamp_classifier"}
    for rows in by_classifier.values():
        assert sum(r["probability"] for r in rows) == pytest.approx(1.0)
        assert [r["ranking"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["probability"] for r in rows] == sorted((r["probability"] for r in rows), reverse=True)
    only = get(client, f"/ztf/v1/objects/{oid}/probabilities", classifier="stamp_classifier").json()
    assert only == by_classifier["stamp_classifier"]
    assert get(client, f"/ztf/v1/objects/{broker_db['unclassified']}/probabilities").json() == []


def test_features_and_single_feature(client, broker_db):
    oid = broker_db["rich"]
    rows = get(client, f"/ztf/v1/objects/{oid}/features").json()
    assert len(rows) == Feature.objects.filter(oid=oid).count() > 100
    assert {"name", "value", "fid", "version"} <= set(rows[0])
    missing = [r for r in rows if r["value"] is None]
    assert missing and all(r["missing_reason"] for r in missing)
    g_only = get(client, f"/ztf/v1/objects/{oid}/features", fid=1).json()
    assert g_only and all(r["fid"] == 1 for r in g_only)
    one = get(client, f"/ztf/v1/objects/{oid}/features/Amplitude_1").json()
    stored = Feature.objects.get(oid=oid, name="Amplitude_1")
    assert one == [{"name": "Amplitude_1", "value": stored.value, "fid": 1, "version": stored.version,
                    "missing_reason": stored.missing_reason}]
    both = get(client, f"/ztf/v1/objects/{oid}/features/Amplitude").json()
    assert sorted(r["name"] for r in both) == ["Amplitude_1", "Amplitude_2"]
    assert client.get(f"/ztf/v1/objects/{oid}/features/NoSuchFeature").status_code == 404
    ratio = get(client, f"/ztf/v1/objects/{oid}/features/Power_rate_1/2").json()  # a name with a slash
    assert [r["name"] for r in ratio] == ["Power_rate_1/2"]
    assert client.get(f"/ztf/v1/objects/{oid}/features", {"fid": "g"}).status_code == 400


def test_classifiers_and_classes(client, broker_db):
    table = get(client, "/ztf/v1/classifiers").json()
    names = {(c["classifier_name"], c["classifier_version"]) for c in table}
    assert ("lc_classifier", LC_VERSION) in names and len(names) == 6
    lc = next(c for c in table if c["classifier_name"] == "lc_classifier")
    expected = sorted(set(Probability.objects.filter(classifier_name="lc_classifier")
                          .values_list("class_name", flat=True)))
    assert lc["classes"] == expected
    classes = get(client, f"/ztf/v1/classifiers/lc_classifier/{LC_VERSION}/classes").json()
    assert classes == [{"name": c} for c in expected]
    assert client.get("/ztf/v1/classifiers/lc_classifier/no-such-version/classes").status_code == 404


def test_stamps_fits_png_and_avro(client, broker_db):
    candid = broker_db["stamped_candid"]
    oid = Detection.objects.get(candid=candid).oid_id
    avro = client.get("/get_avro", {"oid": oid, "candid": candid})
    assert avro.status_code == 200
    record = next(fastavro.reader(io.BytesIO(avro.content)))
    assert record["candid"] == candid and record["objectId"] == oid
    for kind, field in (("science", "cutoutScience"), ("template", "cutoutTemplate"),
                        ("difference", "cutoutDifference")):
        fits_response = client.get("/get_stamp", {"oid": oid, "candid": candid, "type": kind, "format": "fits"})
        assert fits_response.status_code == 200 and fits_response.content == record[field]["stampData"]
        with fits.open(io.BytesIO(gzip.decompress(fits_response.content))) as hdul:
            assert hdul[0].data.ndim == 2
        for stretch in ("asinh", "zscale"):
            png = client.get("/get_stamp", {"oid": oid, "candid": candid, "type": kind, "format": "png",
                                            "stretch": stretch})
            assert png.status_code == 200 and png["Content-Type"] == "image/png"
            assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("params, status", [
    ({}, 400),
    ({"candid": "abc"}, 400),
    ({"candid": 1, "type": "science"}, 404),
    ({"candid": "STAMPED", "type": "bias"}, 400),
    ({"candid": "STAMPED", "format": "jpeg"}, 400),
    ({"candid": "STAMPED", "stretch": "log"}, 400),
    ({"candid": "STAMPED", "oid": "ZTF00someoneelse"}, 404),
])
def test_stamp_errors(client, broker_db, params, status):
    params = {k: (broker_db["stamped_candid"] if v == "STAMPED" else v) for k, v in params.items()}
    response = client.get("/get_stamp", params)
    assert response.status_code == status and response.json()["detail"]
    if "type" not in params and "format" not in params and "stretch" not in params:
        assert client.get("/get_avro", params).status_code == status


def test_api_is_read_only_and_writes_need_staff(client, broker_db):
    oid = broker_db["rich"]
    for url in ("/ztf/v1/objects", f"/ztf/v1/objects/{oid}", f"/ztf/v1/objects/{oid}/probabilities"):
        assert client.post(url, {}).status_code == 403
        assert client.delete(url).status_code == 403
    staff = User.objects.create_user("curator", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.post("/ztf/v1/objects", {}).status_code == 405  # nothing here writes


def test_openapi_schema_and_docs(client, broker_db):
    schema = client.get("/ztf/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = set(schema["paths"])
    assert {"/ztf/v1/objects", "/ztf/v1/objects/{oid}/lightcurve", "/v2/lightcurve/forced-photometry/{oid}", "/ztf/v1/objects/{oid}/features/{name}",
            "/ztf/v1/classifiers/{classifier_name}/{classifier_version}/classes", "/get_stamp",
            "/get_avro"} <= paths
    params = {p["name"]: p for p in schema["paths"]["/ztf/v1/objects"]["get"]["parameters"]}
    assert f"at most {MAX_PAGE_SIZE}" in params["page_size"]["description"]
    assert f"at most {MAX_CONE_RADIUS_ARCSEC:g}" in params["radius"]["description"]
    assert {"class", "classifier", "probability", "oid"} <= set(schema["components"]["schemas"]["ObjectListItem"]
                                                              ["properties"])
    docs = client.get("/ztf/v1/docs")
    assert docs.status_code == 200 and b"http://" not in docs.content.replace(b"http://testserver", b"")
    assert b"cdn" not in docs.content.lower()


@pytest.mark.parametrize("page", ["/ztf/v1/docs", "/ztf/v1/redoc"])
def test_api_docs_reference_nothing_outside_this_server(client, broker_db, page):
    import re

    response = client.get(page)
    assert response.status_code == 200 and "default-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"""https?://[^\s"'<>)]+""", html)
    assert urls, "no reference found: the check would be empty"
    outside = [u for u in urls if re.match(r"(https?:)?//", u) and not re.match(r"(https?:)?//testserver/", u)]
    assert not outside, outside
    for url in (u for u in urls if u.startswith("/")):  # what it loads is served here
        assert url.startswith(("/static/", "/ztf/v1/")), url


def test_client_config_points_here(client, broker_db):
    config = get(client, "/ztf/v1/alerce_config.json").json()
    assert config["ztf"]["ZTF_API_URL"] == "http://testserver"
    assert config["ztf"]["ZTF_ROUTES"]["single_feature"] == "/ztf/v1/objects/%s/features/%s"
    assert config["stamps_ztf"]["AVRO_ROUTES"] == {"get_stamp": "/get_stamp", "get_avro": "/get_avro"}


def test_forced_photometry_route(client, broker_db):
    from pipeline.models import ForcedPhotometry

    oid = ForcedPhotometry.objects.values_list("oid", flat=True).first()
    rows = get(client, f"/v2/lightcurve/forced-photometry/{oid}").json()
    stored = ForcedPhotometry.objects.filter(oid=oid).order_by("mjd", "fid")
    assert len(rows) == stored.count() > 0
    first = stored.first()
    assert rows[0]["extra_fields"]["forcediffimflux"] == first.forcediffimflux
    assert (rows[0]["mjd"], rows[0]["fid"]) == (rows[0]["extra_fields"]["mjd"], rows[0]["extra_fields"]["fid"])
    assert client.get("/v2/lightcurve/forced-photometry/ZTF00nothere").status_code == 404
