"""The alert Avro API (served from an S3 archive on a local S3 server) and the admin pages."""
import shutil

import pytest
from django.contrib import admin
from django.contrib.auth.models import User

from pipeline import backends
from pipeline.ingest.runner import ingest_paths
from pipeline.models import Detection, Object, Quarantine, RawAlert
from tests.conftest import require_shared

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def s3_night(broker_env, settings, s3_endpoint, bucket, monkeypatch):
    """Five real packets and one bad file, ingested with the raw archive in S3."""
    tmp_path = broker_env
    monkeypatch.setenv("ALERT_ARCHIVE_S3_ENDPOINT", s3_endpoint)
    settings.ALERT_ARCHIVE_URL = f"s3://{bucket}/raw"
    backends.archive.cache_clear()
    night = tmp_path / "night"
    night.mkdir()
    packets = sorted(require_shared("ztf_alerts").glob("*.avro"))[:5]
    for path in packets:
        shutil.copy(path, night / path.name)
    (night / "broken.avro").write_bytes(b"not an alert")
    summary = ingest_paths([night], batch_size=10, progress=False)
    return packets, summary


def test_alert_avro_api_returns_the_stored_bytes(client, s3_night):
    packets, summary = s3_night
    assert summary.alerts_read == 6 and summary.quarantined == 1 and RawAlert.objects.count() == 5
    for path in packets:
        candid = int(path.stem)
        response = client.get(f"/alerts/{candid}.avro")
        assert response.status_code == 200
        assert response.content == path.read_bytes()
        assert RawAlert.objects.get(candid=candid).archive_key.startswith("ztf/")
    assert client.get("/alerts/12345.avro").status_code == 404
    bad = Quarantine.objects.get()
    assert backends.archive().load(bad.archive_key) == b"not an alert"


def test_every_table_has_a_working_admin(client, s3_night):
    user = User.objects.create_superuser("astro", "astro@example.org", "pw")
    client.force_login(user)
    registered = {model for model in admin.site._registry if model._meta.app_label == "pipeline"}
    from django.apps import apps

    assert registered == set(apps.get_app_config("pipeline").get_models())
    for model in registered:
        url = f"/admin/pipeline/{model._meta.model_name}/"
        assert client.get(url).status_code == 200, url
        assert client.get(url, {"q": "ZTF"}).status_code == 200, url

    detection = Detection.objects.filter(has_stamp=True).first()
    page = client.get("/admin/pipeline/detection/", {"q": str(detection.candid)}).content.decode()
    assert str(detection.candid) in page and "1 result" in page
    page = client.get("/admin/pipeline/detection/", {"fid__exact": "1", "mjd_age": "older"}).content.decode()
    assert page.count('class="field-candid"') == Detection.objects.filter(fid=1).count()
    oid = Object.objects.first().oid
    assert oid in client.get(f"/admin/pipeline/object/{oid}/change/").content.decode()
    assert client.get("/").status_code == 200
