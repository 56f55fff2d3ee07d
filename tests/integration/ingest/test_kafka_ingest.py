"""Live Kafka ingestion against a real Kafka-protocol broker (Tansu) fed with real packets."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import fastavro
import pytest

from pipeline.ingest.kafka import KafkaIngest
from pipeline.models import Quarantine, RawAlert
from pipeline.surveys import lsst
from tests.conftest import REPO_ROOT, require_shared
from tests.integration.kafka_broker import Broker, produce

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(tmp_path):
    server = Broker(tmp_path / "tansu.log").start()
    yield server
    server.stop()


def _files(folder):
    return [path.read_bytes() for path in sorted(folder.glob("*.avro"))]


def _wire_packets(folder, schemas):
    """Rubin packets framed as Rubin's stream frames them (Confluent wire format, schema id 1000)."""
    out = []
    for path in sorted(folder.glob("*.avro")):
        with open(path, "rb") as fh:
            for record in fastavro.reader(fh):
                out.append(lsst.encode_wire(record, schemas / "10.0" / "lsst.v10_0.alert.avsc", 1000))
    return out


def _committed(bootstrap, group, topic):
    """The group's committed offset on the topic's one partition: the next message it would read."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        consumer.close()


def test_real_packets_from_kafka_are_stored_and_offsets_committed(broker, broker_env, settings):
    schemas = require_shared("schemas", "lsst")
    settings.LSST_SCHEMAS = str(schemas)
    ztf = _files(require_shared("ztf_alerts_older_schemas"))
    rubin = _wire_packets(require_shared("lsst_alerts", "rubin_v10_0"), schemas)
    topic, group = "ztf_20251101_programid1", f"test-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, ztf + rubin + [b"this is not an alert"])
    total = len(ztf) + len(rubin) + 1

    summary = KafkaIngest(broker.bootstrap, [topic], group, batch_size=10, batch_timeout=1, progress=False,
                          max_alerts=total, stop_when_idle=90).run()
    assert summary.alerts_read == total and summary.batches >= 4
    assert RawAlert.objects.count() == len(ztf) + len(rubin)
    assert RawAlert.objects.filter(schemavsn="10.0").count() == len(rubin)
    bad = Quarantine.objects.get()
    assert bad.source == f"kafka:{topic}[0]@{total - 1}" and "not an Avro file" in bad.reason
    assert _committed(broker.bootstrap, group, topic) == total


def test_a_batch_that_failed_is_replayed_not_lost(broker, broker_env, monkeypatch):
    from pipeline.ingest import kafka as kafka_ingest

    packets = _files(require_shared("ztf_alerts_older_schemas"))
    topic, group = "replay", f"test-{uuid.uuid4().hex[:6]}"
    produce(broker.bootstrap, topic, packets)
    real, calls = kafka_ingest.ingest_batch, []

    def crash_on_second_batch(items, archive):
        calls.append(len(items))
        if len(calls) == 2:
            raise RuntimeError("the process died while storing its second batch")
        return real(items, archive)

    monkeypatch.setattr(kafka_ingest, "ingest_batch", crash_on_second_batch)
    with pytest.raises(RuntimeError):
        KafkaIngest(broker.bootstrap, [topic], group, batch_size=8, batch_timeout=1, progress=False,
                    pipeline=False, stop_when_idle=90).run()
    assert RawAlert.objects.count() == 8
    assert _committed(broker.bootstrap, group, topic) == 8  # the failed batch was not committed
    monkeypatch.setattr(kafka_ingest, "ingest_batch", real)
    summary = KafkaIngest(broker.bootstrap, [topic], group, batch_size=8, batch_timeout=1, progress=False,
                          pipeline=False, max_alerts=len(packets) - 8, stop_when_idle=90).run()
    assert summary.alerts_read == len(packets) - 8  # resumed at the first uncommitted message
    assert RawAlert.objects.count() == len(packets)


def _raw_alerts(db_path):
    try:
        with sqlite3.connect(db_path) as conn:
            return conn.execute("SELECT count(*) FROM raw_alert").fetchone()[0]
    except sqlite3.OperationalError:
        return -1


def _wait_for(db_path, n, consumer, seconds=150):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and consumer.poll() is None:
        if _raw_alerts(db_path) >= n:
            return _raw_alerts(db_path)
        time.sleep(0.5)
    return _raw_alerts(db_path)


def test_command_survives_a_broker_restart_and_stops_on_sigterm(broker, tmp_path):
    ztf = _files(require_shared("ztf_alerts_older_schemas"))
    rubin = _files(require_shared("lsst_alerts", "rubin_v9_0"))
    db_path = tmp_path / "broker.sqlite3"
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{db_path}", BROKER_VAR_DIR=str(tmp_path / "var"),
               ALERT_ARCHIVE_URL=str(tmp_path / "archive"), OUTPUT_STREAM_URL="")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    topic = "live"
    produce(broker.bootstrap, topic, ztf)
    consumer = subprocess.Popen(
        manage + ["ingest", "--kafka", broker.bootstrap, "--topic", topic, "--group", "night", "--batch-size", "10",
                  "--no-pipeline", "--no-progress"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_for(db_path, len(ztf), consumer) == len(ztf)
        broker.restart()  # memory storage: the topic comes back empty, the consumer must carry on
        produce(broker.bootstrap, topic, rubin)
        assert _wait_for(db_path, len(ztf) + len(rubin), consumer) == len(ztf) + len(rubin)
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=60)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, err[-3000:]
    assert f"alerts read          {len(ztf) + len(rubin)}" in out


def test_output_stream_to_kafka_when_configured(broker, broker_env, settings, capsys):
    from django.core.management import call_command

    from pipeline.ingest.runner import ingest_paths
    from pipeline.output import streams

    settings.OUTPUT_STREAM_URL = f"kafka://{broker.bootstrap}/broker-alerts"
    streams.output_stream.cache_clear()
    try:
        folder = require_shared("lsst_alerts", "rubin_v7_4")
        summary = ingest_paths([folder], batch_size=5, progress=False)
        assert not summary.step_failures, summary.report()
        n = RawAlert.objects.count()
        got = [m for _, m in streams.output_stream().read(from_start=True, count=n, block_ms=1000)]
        assert sorted(m["candid"] for m in got) == sorted(RawAlert.objects.values_list("candid", flat=True))
        assert all(m["survey"] == "lsst" and m["magstats"] for m in got)
        call_command("listen", "--from-start", "--count", "3")
        assert len([line for line in capsys.readouterr().out.splitlines() if "LSST" in line]) == 3
    finally:
        streams.output_stream.cache_clear()
