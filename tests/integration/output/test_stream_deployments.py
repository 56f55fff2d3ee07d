"""The output stream per deployment, on the real Redis: alerts left pending by an unreachable stream go
out with `repair`; two databases publishing into one Redis each send their own alerts; nothing twice."""
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from django.core.management import call_command

from pipeline.ingest.runner import ingest_paths
from pipeline.models import PublishedAlert, RawAlert
from pipeline.output import streams
from pipeline.simulation.night import simulate_night
from tests.conftest import REPO_ROOT
from tests.integration.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)
REDIS_DB = 9  # this module's own Redis db; each test its own stream, deleted at the end


@pytest.fixture
def stream_name():
    import redis

    name = f"test-deploy-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(f"{require_redis()}/{REDIS_DB}")
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)
    streams.output_stream.cache_clear()


def use_stream(settings, url):
    settings.OUTPUT_STREAM_URL = url
    streams.output_stream.cache_clear()
    return streams.output_stream()


def candids_on(stream):
    return Counter(m["candid"] for _, m in stream.read(from_start=True, block_ms=0))


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_alerts_left_pending_by_an_unreachable_stream_go_out_with_repair(broker_env, settings, stream_name):
    simulate_night(broker_env / "night", 15, seed=21)
    use_stream(settings, f"redis://127.0.0.1:{closed_port()}/{REDIS_DB}?stream={stream_name}")  # the stream is down
    result = ingest_paths([broker_env / "night"], batch_size=7, progress=False)
    assert not result.step_failures, result.report()
    alerts = set(RawAlert.objects.values_list("candid", flat=True))
    assert len(alerts) >= 15 and not PublishedAlert.objects.exists()

    stream = use_stream(settings, f"{require_redis()}/{REDIS_DB}?stream={stream_name}")  # back
    assert candids_on(stream) == Counter()
    call_command("repair", stdout=open(os.devnull, "w"))
    on_stream = candids_on(stream)
    assert set(on_stream) == alerts and max(on_stream.values()) == 1
    assert set(PublishedAlert.objects.values_list("candid", flat=True)) == alerts

    # Nothing is behind any more, and neither repair nor re-ingesting sends anything twice.
    assert not repair_finds_publish_behind()
    call_command("repair", stdout=open(os.devnull, "w"))
    ingest_paths([broker_env / "night"], batch_size=7, progress=False)
    assert candids_on(stream) == on_stream


def repair_finds_publish_behind():
    from pipeline.workflow.repair import find_behind

    return find_behind().get("publish", set())


def test_two_databases_on_one_redis_each_publish_their_alerts(broker_env, settings, stream_name, tmp_path):
    night = broker_env / "night"
    simulate_night(night, 10, seed=22)
    url = f"{require_redis()}/{REDIS_DB}?stream={stream_name}"
    stream = use_stream(settings, url)
    ingest_paths([night], batch_size=100, progress=False)
    alerts = set(RawAlert.objects.values_list("candid", flat=True))
    assert candids_on(stream) == Counter({c: 1 for c in alerts})

    # A second, fresh database (its own SQLite file) ingests the same night into the same stream.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "DATABASE_URL", "CELERY_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/two.sqlite3", BROKER_VAR_DIR=str(tmp_path / "var"),
               ALERT_ARCHIVE_URL=str(tmp_path / "archive2"), XMATCH_LOCAL_INDEX=str(tmp_path / "none.npz"),
               OUTPUT_STREAM_URL=url, STAMP_CLASSIFIER="off")
    env.pop("BROKER_DEPLOYMENT_ID", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    for command in (["migrate", "--noinput"], ["ingest", str(night), "--no-progress"]):
        subprocess.run(manage + command, env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    assert candids_on(stream) == Counter({c: 2 for c in alerts})  # each deployment sent its own
    with sqlite3.connect(tmp_path / "two.sqlite3") as conn:
        assert {c for (c,) in conn.execute("SELECT candid FROM published_alert")} == alerts
        (other,) = conn.execute("SELECT key FROM deployment").fetchone()
    assert other != streams.deployment_id()

    # Re-ingesting in either database sends nothing again.
    ingest_paths([night], batch_size=100, progress=False)
    subprocess.run(manage + ["ingest", str(night), "--no-progress"], env=env, cwd=REPO_ROOT, check=True,
                   capture_output=True)
    assert candids_on(stream) == Counter({c: 2 for c in alerts})

    # Without a stream name, each deployment writes its own stream.
    default = use_stream(settings, f"{require_redis()}/{REDIS_DB}?maxlen=1000")
    assert default.stream == f"broker:{streams.deployment_id()}:alerts"
