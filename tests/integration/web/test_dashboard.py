"""Dashboard pages through Django's test client: what they show, and the bulk downloads."""
import csv
import gzip
import io
import json
import re
import zipfile
from collections import Counter

import pytest
from astropy.io import fits

from pipeline.models import Detection, Object, OutlierScore, Probability, Quarantine, RawAlert, StepTiming
from pipeline.steps.features.registry import NOT_IN_ALERCE
from tests.integration.broker_data import FAILED_STEP, broker_db  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def html(client, url, params=None, status=200):
    response = client.get(url, params or {})
    assert response.status_code == status, url
    return response.content.decode()


def result_oids(page):
    table = page.split('id="results"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'href="/object/([^"]+)"', table)


def test_index_links_objects(client, broker_db):
    page = html(client, "/")
    assert f'href="/object/{broker_db["rich"]}"' in page


def test_search_by_class_probability_ndet_and_dates(client, broker_db):
    expected = set(Probability.objects.filter(classifier_name="lc_classifier", ranking=1, class_name="SNIa")
                   .values_list("oid", flat=True))
    page = html(client, "/search", {"class": "SNIa", "page_size": 100})
    assert set(result_oids(page)) == expected
    strong = {o for o in expected if Probability.objects.get(
        oid=o, classifier_name="lc_classifier", ranking=1).probability >= 0.3}
    assert set(result_oids(html(client, "/search", {"class": "SNIa", "probability": 0.3}))) == strong

    page = html(client, "/search", {"ndet_min": 10, "ndet_max": 40, "page_size": 100})
    assert set(result_oids(page)) == set(Object.objects.filter(ndet__gte=10, ndet__lte=40).values_list("oid", flat=True))
    first = sorted(Object.objects.values_list("firstmjd", flat=True))
    page = html(client, "/search", {"firstmjd_max": first[4], "page_size": 100})
    assert set(result_oids(page)) == set(Object.objects.filter(firstmjd__lte=first[4]).values_list("oid", flat=True))
    # newest first by default; the JSON link carries the same search
    page = html(client, "/search", {"page_size": 100})
    lastmjds = [Object.objects.get(oid=o).lastmjd for o in result_oids(page)]
    assert lastmjds == sorted(lastmjds, reverse=True) and len(lastmjds) == Object.objects.count()
    link = re.search(r'id="api-link" href="([^"]+)"', html(client, "/search", {"ndet_min": 10})).group(1)
    api = client.get(link.replace("&amp;", "&")).json()
    assert {i["oid"] for i in api["items"]} == set(Object.objects.filter(ndet__gte=10).values_list("oid", flat=True))


def test_search_by_oid_cone_pages_and_errors(client, broker_db):
    oid = broker_db["rich"]
    assert result_oids(html(client, "/search", {"oid": oid})) == [oid]
    obj = Object.objects.get(oid=oid)
    assert oid in result_oids(html(client, "/search", {"ra": obj.meanra, "dec": obj.meandec, "radius": 5}))
    n = Object.objects.count()
    page = html(client, "/search", {"page_size": 5, "page": 2})
    assert len(result_oids(page)) == 5 and "page=3" in page and "page=1" in page and f"{n} objects" in page
    page = html(client, "/search", {"radius": 99999, "ra": 1, "dec": 1}, status=400)
    assert 'class="error"' in page and "radius" in page


def test_object_page_real_and_simulated(client, broker_db):
    sim = next(o for o in broker_db["all"] if o.startswith("ZTFSIM"))
    page = html(client, f"/object/{sim}")
    assert "Simulated object" in page and "SIMULATED" in page
    data = json.loads(re.search(r'<script id="lc-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["detections"]) == Detection.objects.filter(oid=sim).count()
    assert sum(d["dubious"] for d in data["detections"]) == Detection.objects.filter(oid=sim, dubious=True).count()
    if broker_db["real"]:
        real = html(client, f"/object/{broker_db['real'][0]}")
        assert "Simulated object" not in real
    html(client, "/object/ZTF00nothere", status=404)


def test_object_page_shows_everything_computed(client, broker_db):
    oid = broker_db["rich"]
    page = html(client, f"/object/{oid}")
    for label in ("Light curve, top level", "Light curve, bottom level", "Stamp (first alert)",
                  "Light curve, periodic branch"):
        assert label in page
    assert f'/get_avro?oid={oid}&amp;candid=' in page and f'href="/ztf/v1/objects/{oid}/lightcurve"' in page
    candids = [c for c in Detection.objects.filter(oid=oid, has_stamp=True).values_list("candid", flat=True)]
    for kind in ("science", "template", "difference"):
        assert re.search(rf'id="stamp-{kind}"[^>]+candid=({"|".join(map(str, candids))})&amp;type={kind}', page)
    assert "format=fits" in page
    # features: units, the reason of every missing one, and our own features marked
    table = page.split('id="features"', 1)[1].split("</table>", 1)[0]
    assert "too_few_points" in table or "missing" in table
    assert ">mag<" in table
    if NOT_IN_ALERCE:
        assert 'class="badge ours"' in table
    outlier = OutlierScore.objects.get(oid=oid)
    assert f"{outlier.score:.4f}" in page


def test_object_page_says_why_not_classified(client, broker_db):
    few = html(client, f"/object/{broker_db['unclassified']}")
    assert "too few detections for the light-curve classifier" in few
    failed = html(client, f"/object/{broker_db['failed']}")
    reason = Quarantine.objects.get(oid=broker_db["failed"], step=FAILED_STEP).reason
    assert f"step failed: {reason}" in failed
    oid = broker_db["rich"]
    Probability.objects.filter(oid=oid).delete()
    OutlierScore.objects.filter(oid=oid).delete()
    waiting = html(client, f"/object/{oid}")
    assert "not yet classified by the light-curve classifier" in waiting
    assert "not yet classified by the stamp classifier" in waiting


def test_pipeline_page(client, broker_db):
    page = html(client, "/pipeline")
    steps = set(StepTiming.objects.values_list("step", flat=True))
    svg = page.split('id="latency-cdf"', 1)[1].split("</svg>", 1)[0]
    assert {m for m in re.findall(r"<title>([^<]+)</title>", svg)} == steps
    assert f"{RawAlert.objects.count()}</strong> alerts ingested" in page
    quarantine = page.split('id="quarantine"', 1)[1].split("</table>", 1)[0]
    assert "NaN in features" in quarantine and FAILED_STEP in quarantine
    assert "nothing queues" in page  # eager mode


def test_classifier_comparison_matrix(client, broker_db):
    page = html(client, "/classifiers")
    lc = dict(Probability.objects.filter(classifier_name="lc_classifier", ranking=1).values_list("oid", "class_name"))
    stamp = dict(Probability.objects.filter(classifier_name="stamp_classifier", ranking=1)
                 .values_list("oid", "class_name"))
    pairs = Counter((lc[o], stamp[o]) for o in lc if o in stamp)
    row_name, col_name = max(pairs, key=lambda k: (pairs[k], k))
    total = sum(n for (a, _), n in pairs.items() if a == row_name)
    table = page.split('id="comparison"', 1)[1].split("</table>", 1)[0]
    row = table.split(f">{row_name}</a></th>", 1)[1].split("</tr>", 1)[0]
    columns = re.findall(r"<th>([^<]+)</th>", table.split("</tr>", 1)[0])[1:]
    cells = re.findall(r">([0-9.]+) <span class=\"small\">\((\d+)\)", row)
    assert len(columns) == len(cells)
    value, n = cells[columns.index(col_name)]
    assert int(n) == pairs[(row_name, col_name)] and float(value) == pytest.approx(pairs[(row_name, col_name)] / total,
                                                                                   abs=0.005)
    assert sum(float(v) for v, _ in cells) == pytest.approx(1.0, abs=0.02)


def test_outliers_page(client, broker_db):
    page = html(client, "/outliers", {"all": "1"})
    for branch in set(OutlierScore.objects.values_list("branch", flat=True)):
        ranked = list(OutlierScore.objects.filter(branch=branch).order_by("-score").values_list("oid", flat=True))
        block = page.split(f"<h2>{branch} ", 1)[1].split("</table>", 1)[0]
        assert re.findall(r'href="/object/([^"]+)"', block) == ranked
    flagged = set(OutlierScore.objects.filter(is_outlier=True).values_list("oid", flat=True))
    assert set(re.findall(r'href="/object/([^"]+)"', html(client, "/outliers").split("<main>")[1])) == flagged


def test_bulk_cutouts_zip(client, broker_db):
    response = client.get("/search/cutouts.zip", {"ndet_min": 2})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    oids = set(Object.objects.filter(ndet__gte=2).values_list("oid", flat=True))
    alerts = RawAlert.objects.filter(oid__in=oids)
    names = [n for n in archive.namelist() if n != "manifest.csv"]
    assert len(names) == 3 * alerts.count()
    first = alerts.order_by("candid").first()
    data = archive.read(f"{first.oid}/{first.candid}_difference.fits.gz")
    with fits.open(io.BytesIO(gzip.decompress(data))) as hdul:
        assert hdul[0].data.shape[0] > 10
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert len(manifest) == len(names)


def test_bulk_csv_with_chosen_columns(client, broker_db):
    top = Probability.objects.filter(classifier_name="stamp_classifier", ranking=1)
    cls = Counter(top.values_list("class_name", flat=True)).most_common(1)[0][0]
    response = client.get("/search/objects.csv", {"columns": ["oid", "ndet", "class", "probability"],
                                                  "classifier": "stamp_classifier", "class": cls})
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["oid", "ndet", "class", "probability"]
    expected = {p.oid_id: p for p in top.filter(class_name=cls)}
    assert expected and {r[0] for r in rows[1:]} == set(expected)
    for oid, ndet, row_class, prob in rows[1:]:
        assert row_class == cls and float(prob) == pytest.approx(expected[oid].probability)
        assert int(ndet) == Object.objects.get(oid=oid).ndet
    assert client.get("/search/objects.csv", {"columns": ["password"]}).status_code == 400


@pytest.mark.services
def test_pipeline_page_queue_lengths_from_redis(client, broker_db, settings):
    import uuid

    import redis
    from kombu import Queue

    from tests.integration.services import require_redis

    url = f"{require_redis()}/14"
    names = [f"{q}-{uuid.uuid4().hex[:6]}" for q in ("ingest", "cpu")]
    settings.CELERY_BROKER_URL = url
    settings.CELERY_TASK_QUEUES = [Queue(n) for n in names]
    server = redis.Redis.from_url(url)
    try:
        server.rpush(names[1], *[b"message"] * 3)
        page = html(client, "/pipeline")
        assert re.search(rf"<td>{names[0]}</td><td class=\"num\">0</td>", page)
        assert re.search(rf"<td>{names[1]}</td><td class=\"num\">3</td>", page)
    finally:
        server.delete(*names)


def test_object_page_names_any_failed_step(client, broker_db):
    from pipeline.models import ObjectFeatureState

    oid = broker_db["rich"]
    ObjectFeatureState.objects.filter(oid=oid).delete()
    Quarantine.objects.create(sha256="1" * 64, reason="light curve has NaN times", source="test", oid=oid,
                              step="features")
    page = html(client, f"/object/{oid}")
    status = page.split('id="status"', 1)[1].split("</ul>", 1)[0]
    assert re.search(r'badge no">features</span> step failed: light curve has NaN times', status)


def test_search_dates_as_calendar_days(client, broker_db):
    import datetime

    last = sorted(Object.objects.values_list("lastmjd", flat=True))
    cut = int(last[len(last) // 2])  # an MJD day boundary
    day = (datetime.date(1858, 11, 17) + datetime.timedelta(days=cut)).isoformat()
    by_date = set(result_oids(html(client, "/search", {"lastmjd_min": day, "page_size": 100})))
    assert by_date == set(Object.objects.filter(lastmjd__gte=cut).values_list("oid", flat=True)) and by_date
    assert by_date == set(result_oids(html(client, "/search", {"lastmjd_min": cut, "page_size": 100})))


def test_pipeline_page_rows_of_the_classifiers_show_their_objects(client, broker_db):
    page = html(client, "/pipeline")
    table = page.split('id="steps"', 1)[1].split("</table>", 1)[0]
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<td[^>]*>([^<]*)</td>", row)
                                              for row in table.split("<tr>")[2:])}
    recorded = set(StepTiming.objects.values_list("step", flat=True))
    assert "lc_classifier" in recorded and "lc_classifier" in rows
    for step in ("lc_classifier", "stamp_classifier"):
        if step in rows:
            expected = Probability.objects.filter(classifier_name=step).values("oid").distinct().count()
            assert expected > 0 and rows[step][2] == str(expected), (step, rows[step])
    assert rows["lc_classifier"][3] == str(Quarantine.objects.filter(step="lc_classifier").count())


def test_latency_axis_ticks_read_as_round_durations():
    import numpy as np

    from pipeline.web.views import cdf_svg

    cdfs = {"features": np.geomspace(0.05, 5000, 50), "outliers": np.geomspace(2, 200000, 50)}
    labels = [t["label"] for t in cdf_svg(cdfs)["xticks"]]
    assert labels == ["0.01 s", "0.1 s", "1 s", "10 s", "1 min", "10 min", "1 h", "10 h", "1 d", "10 d"]
    xs = [t["x"] for t in cdf_svg(cdfs)["xticks"]]
    assert xs == sorted(xs)


def test_fold_is_offered_only_at_a_period_within_the_light_curve(client, broker_db):
    from pipeline.models import Feature

    oid = broker_db["rich"]
    mjds = list(Detection.objects.filter(oid=oid).values_list("mjd", flat=True))
    baseline = max(mjds) - min(mjds)
    assert baseline > 1
    Feature.objects.filter(oid=oid, name="Multiband_period").delete()
    row = Feature.objects.create(oid_id=oid, name="Multiband_period", value=2.5 * baseline, version="zz-test")

    def lc_data(page):
        return json.loads(re.search(r'<script id="lc-data" type="application/json">(.*?)</script>', page, re.S)
                          .group(1))

    page = html(client, f"/object/{oid}")
    assert re.search(r'id="lc-fold"\s+disabled', page) and lc_data(page)["period"] is None
    assert "longer than the light curve" in page
    row.value = baseline / 3
    row.save()
    page = html(client, f"/object/{oid}")
    assert not re.search(r'id="lc-fold"\s+disabled', page)
    assert lc_data(page)["period"] == pytest.approx(baseline / 3)
