"""The output stream on the real Redis: every ingested alert appears exactly once, also when a batch
is re-delivered after its worker died between sending and recording."""
import uuid
from collections import Counter

import pytest
from django.core.management import call_command

from pipeline.ingest.runner import ingest_paths
from pipeline.models import Probability, PublishedAlert, RawAlert
from pipeline.output import streams
from tests.conftest import require_shared
from tests.packets import refused_packets
from tests.integration.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)
REDIS_DB = 13  # this module's own Redis db; each test its own stream


@pytest.fixture
def redis_stream(settings):
    import redis

    url = f"{require_redis()}/{REDIS_DB}?stream=test-out-{uuid.uuid4().hex[:8]}&maxlen=5000"
    settings.OUTPUT_STREAM_URL = url
    streams.output_stream.cache_clear()
    stream = streams.output_stream()
    yield stream
    client = redis.Redis.from_url(f"{require_redis()}/{REDIS_DB}")
    for key in client.scan_iter(f"{stream.stream}*"):
        client.delete(key)
    streams.output_stream.cache_clear()


def _candids_on(stream):
    return Counter(m["candid"] for _, m in stream.read(from_start=True, block_ms=0))


def test_every_ingested_alert_once(broker_env, redis_stream, capsys):
    folders = [require_shared("ztf_alerts_older_schemas"), require_shared("lsst_alerts", "rubin_v9_0")]
    first = ingest_paths(folders, batch_size=15, progress=False)
    assert not first.step_failures, first.report()
    on_stream = _candids_on(redis_stream)
    assert set(on_stream) == set(RawAlert.objects.values_list("candid", flat=True))
    assert max(on_stream.values()) == 1
    assert PublishedAlert.objects.count() == len(on_stream)
    # A ZTF message carries its corrected detection; a Rubin one its fluxes; both their magstats.
    messages = {m["candid"]: m for _, m in redis_stream.read(from_start=True, block_ms=0)}
    ztf = next(m for m in messages.values() if m["survey"] == "ztf" and m["detection"]["corrected"])
    assert ztf["detection"]["magpsf_corr"] is not None and ztf["models"]["correction"]
    rubin = next(m for m in messages.values() if m["survey"] == "lsst")
    assert rubin["detection"]["psf_flux"] is not None and rubin["magstats"]
    assert {s["fid"] for s in rubin["magstats"]} <= set(range(10, 16))

    # Re-ingesting and re-running the step graph sends nothing again.
    ingest_paths(folders, batch_size=15, progress=False)
    call_command("reprocess", "--all")
    assert _candids_on(redis_stream) == on_stream

    capsys.readouterr()
    call_command("listen", "--from-start", "--no-follow")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == len(on_stream)
    assert sum(str(candid) in " ".join(lines) for candid in on_stream) == len(on_stream)


class _DiesAfterSending:
    """The real Redis stream, but the worker 'dies' right after the first chunk went out."""

    def __init__(self, stream):
        self.stream, self.name, self.calls = stream, stream.name, 0

    def send(self, messages):
        self.calls += 1
        sent = self.stream.send(messages)
        if self.calls == 1:
            raise SystemExit("worker killed after sending, before recording")
        return sent


def test_redelivered_batch_after_a_crash_sends_each_alert_once(broker_env, redis_stream, settings, monkeypatch):
    folder = require_shared("lsst_alerts", "rubin_v10_0")
    settings.OUTPUT_STREAM_URL = ""  # ingest without publishing, then publish by hand
    result = ingest_paths([folder], batch_size=100, pipeline=True, progress=False)
    oids = list(RawAlert.objects.values_list("oid", flat=True))
    monkeypatch.setattr(streams, "CHUNK", 5)
    with pytest.raises(SystemExit):
        streams.publish(oids, result.batch_ids[0], stream=_DiesAfterSending(redis_stream))
    assert PublishedAlert.objects.count() == 0  # nothing recorded: the crash came first
    assert sum(_candids_on(redis_stream).values()) == 5
    sent = streams.publish(oids, result.batch_ids[0], stream=redis_stream)  # the re-delivered batch
    on_stream = _candids_on(redis_stream)
    assert sent == len(oids) - 5
    assert set(on_stream) == set(RawAlert.objects.values_list("candid", flat=True)) and max(on_stream.values()) == 1
    # Even with the record lost entirely, Redis remembers what it was sent.
    PublishedAlert.objects.all().delete()
    assert streams.publish(oids, "again", stream=redis_stream) == 0
    assert _candids_on(redis_stream) == on_stream


def test_probabilities_and_outliers_are_in_the_message(broker_env, redis_stream):
    from pipeline.models import OutlierScore

    folder = require_shared("lsst_alerts", "rubin_v7_4")
    from django.conf import settings

    url, settings.OUTPUT_STREAM_URL = settings.OUTPUT_STREAM_URL, ""
    ingest_paths([folder], batch_size=100, progress=False)
    settings.OUTPUT_STREAM_URL = url
    raw = RawAlert.objects.order_by("candid").first()
    for rank, (name, p) in enumerate((("SN", 0.6), ("AGN", 0.4)), start=1):
        Probability.objects.create(oid_id=raw.oid, classifier_name="lc_top", classifier_version="t1",
                                   class_name=name, probability=p, ranking=rank)
    OutlierScore.objects.create(oid_id=raw.oid, version="o2", branch="Transient", score=0.99, is_outlier=True)
    streams.publish([raw.oid], "manual")
    message = next(m for _, m in redis_stream.read(from_start=True, block_ms=0) if m["candid"] == raw.candid)
    assert [(p["class_name"], p["probability"]) for p in message["probabilities"]] == [("SN", 0.6), ("AGN", 0.4)]
    assert message["outlier"] == {"version": "o2", "branch": "Transient", "score": 0.99, "is_outlier": True}
    assert message["models"]["lc_top"] == "t1" and message["models"]["outliers"] == "o2"
    assert "SN 0.60" in streams.describe(message) and "OUTLIER" in streams.describe(message)


def test_stream_length_is_bounded(settings):
    import datetime as dt

    import redis

    url = f"{require_redis()}/{REDIS_DB}?stream=test-bound-{uuid.uuid4().hex[:8]}&maxlen=50"
    stream = streams.RedisStream(url)
    detection = {"mjd": 1.0, "fid": 11, "ra": 1.0, "dec": 1.0, "isdiffpos": 1, "has_stamp": False}
    messages = [{"oid": f"o{i}", "candid": i, "survey": "lsst", "batch_id": "b", "published_ms": dt.datetime.now(),
                 "detection": detection, "magstats": [], "probabilities": [], "outlier": None, "models": {}}
                for i in range(1, 401)]
    try:
        assert len(stream.send(messages)) == 400
        # XADD MAXLEN ~ trims whole nodes of up to 100 entries: about maxlen entries stay
        assert 50 <= stream.client.xlen(stream.stream) <= 150
        newest = [m["candid"] for _, m in stream.read(from_start=True, block_ms=0)]
        assert newest[-1] == 400 and newest == sorted(newest)
    finally:
        client = redis.Redis.from_url(f"{require_redis()}/{REDIS_DB}")
        for key in client.scan_iter(f"{stream.stream}*"):
            client.delete(key)


@pytest.mark.stamp_classifier
def test_messages_carry_both_classifiers_published_after_them(broker_env, redis_stream):
    """Real ZTF packets through the eager canvas with the real models: publish waits for the stamp
    classifier (gpu branch) and the light-curve steps, so every message of a new object carries the
    stamp probabilities, and those of objects above the gate the light-curve ones too."""
    import shutil

    import pandas as pd

    manifest = pd.read_csv(require_shared("ztf_alerts_manifest.csv"))
    alerts = require_shared("ztf_alerts")
    chosen = manifest[(manifest["dir"] == "ztf_alerts") & (manifest["n_cutouts"] == 3)]
    chosen = chosen[~chosen["file"].isin(refused_packets(alerts))]  # placeholder rebroadcasts (issue 27)
    chosen = chosen.sort_values("n_prv_candidates", ascending=False).drop_duplicates("objectId").head(12)
    folder = broker_env / "night"
    folder.mkdir()
    for name in chosen["file"]:
        shutil.copy(alerts / name, folder / name)
    ingest_paths([folder], batch_size=100, progress=False)

    messages = [m for _, m in redis_stream.read(from_start=True, block_ms=0)]
    assert len(messages) == RawAlert.objects.count() == len(chosen)
    lc_classified = set(Probability.objects.filter(classifier_name="lc_classifier").values_list("oid", flat=True))
    assert lc_classified, "no object of the chosen packets passed the light-curve gate"
    for message in messages:
        names = {p["classifier_name"] for p in message["probabilities"]}
        assert "stamp_classifier" in names and "stamp_classifier" in message["models"]
        stamp = [p["probability"] for p in message["probabilities"] if p["classifier_name"] == "stamp_classifier"]
        assert len(stamp) == 5 and abs(sum(stamp) - 1) < 1e-5
        if message["oid"] in lc_classified:
            assert {"lc_classifier", "lc_classifier_top"} <= names and message["outlier"] is not None


def test_a_rubin_alert_with_a_ztf_candid_is_published_too(broker_env, redis_stream, tmp_path):
    """Alerts are (survey, candid): a Rubin diaSourceId equal to a ZTF candid is another alert to send."""
    from tests.integration.ingest.test_lsst_ingest import _real, _rubin_packet_with_id

    ztf_path = sorted(require_shared("ztf_alerts").glob("*.avro"))[0]
    candid = _real(ztf_path)[1]["candid"]
    rubin_path, _ = _rubin_packet_with_id(tmp_path, candid)
    for paths in ([ztf_path], [rubin_path], [ztf_path, rubin_path]):
        ingest_paths(paths, batch_size=10, pipeline=True, progress=False)
    on_stream = Counter((m["survey"], m["candid"]) for _, m in redis_stream.read(from_start=True, block_ms=0))
    assert on_stream == {("ztf", candid): 1, ("lsst", candid): 1}
    assert sorted(PublishedAlert.objects.values_list("survey", "candid")) == [("lsst", candid), ("ztf", candid)]
