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
