"""A stored alert whose cutout is a gzip bomb: the stamp routes answer 422 JSON within bounded memory."""
import tracemalloc

import fastavro
import pytest

from pipeline.ingest.runner import ingest_paths
from pipeline.models import RawAlert
from pipeline.surveys.cutouts import MAX_CUTOUT_BYTES
from tests.conftest import require_shared
from tests.cutout_bombs import gzip_bomb

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def bomb_alert(broker_env):
    """A real packet whose science cutout was replaced by 100 KB that inflate to 100 MiB, ingested."""
    source = sorted(require_shared("ztf_alerts").glob("*.avro"))[0]
    with open(source, "rb") as fh:
        reader = fastavro.reader(fh)
        schema, record = reader.writer_schema, next(iter(reader))
    record["cutoutScience"]["stampData"] = gzip_bomb(100 * 2**20)
    folder = broker_env / "night"
    folder.mkdir()
    with open(folder / "bomb.avro", "wb") as fh:
        fastavro.writer(fh, schema, [record])
    summary = ingest_paths([folder], batch_size=10, pipeline=False, progress=False)
    assert summary.quarantined == 0, summary.report()
    assert RawAlert.objects.filter(candid=record["candid"]).exists()
    return record


def traced_get(client, url, params):
    tracemalloc.start()
    try:
        response = client.get(url, params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return response, peak


def test_get_stamp_png_of_a_gzip_bomb_is_422_within_bounded_memory(client, bomb_alert):
    params = {"oid": bomb_alert["objectId"], "candid": bomb_alert["candid"], "type": "science", "format": "png"}
    response, peak = traced_get(client, "/get_stamp", params)
    assert response.status_code == 422, response.content[:200]
    assert "too large" in response.json()["detail"] or "beyond" in response.json()["detail"]
    assert peak < 8 * MAX_CUTOUT_BYTES, f"peak {peak / 2**20:.1f} MiB"
    # the other cutouts of the packet are intact and still shown; the FITS is handed over as stored
    assert client.get("/get_stamp", {**params, "type": "difference"}).status_code == 200
    fits_response = client.get("/get_stamp", {**params, "format": "fits"})
    assert fits_response.status_code == 200 and fits_response.content == bomb_alert["cutoutScience"]["stampData"]


def test_multisurvey_stamp_png_of_a_gzip_bomb_is_422_within_bounded_memory(client, bomb_alert):
    params = {"measurement_id": bomb_alert["candid"], "stamp_type": "cutoutScience", "file_format": "png",
              "survey_id": "ztf"}
    response, peak = traced_get(client, "/multisurvey/stamps_api/stamp", params)
    assert response.status_code == 422, response.content[:200]
    assert "beyond" in response.json()["detail"]
    assert peak < 8 * MAX_CUTOUT_BYTES, f"peak {peak / 2**20:.1f} MiB"
    assert client.get("/multisurvey/stamps_api/stamp", {**params, "stamp_type": "cutoutTemplate"}).status_code == 200
