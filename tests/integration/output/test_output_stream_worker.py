"""Exactly once on the output stream with a real worker killed mid-batch (PostgreSQL, Redis, celery).

The worker's process is killed (SIGKILL, by the BROKER_FAULT_KILL_PUBLISH hook) right after it sent the
first chunk of a batch's messages and before it recorded them; Celery re-delivers the batch
(acks_late, reject on worker lost) to the respawned process, which must send only the rest.
"""
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from tests.conftest import REPO_ROOT, require_shared
from tests.integration.services import require_postgres, require_redis

pytestmark = pytest.mark.services
REDIS_DB = 12  # the Celery broker of this test and its output stream; flushed at the end


@pytest.fixture
def farm(tmp_path):
    import psycopg
    import redis

    pg_url, redis_url = require_postgres(), require_redis()
    name = f"broker_i18_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    suffix = uuid.uuid4().hex[:6]
    stream = f"out-{suffix}"
    env = dict(
        os.environ,
        DATABASE_URL=f"{pg_url}/{name}",
        CELERY_BROKER_URL=f"{redis_url}/{REDIS_DB}",
        OUTPUT_STREAM_URL=f"{redis_url}/{REDIS_DB}?stream={stream}&maxlen=10000",
        OUTPUT_STREAM_CHUNK="10",
        STAMP_CLASSIFIER="off",  # no gpu-queue worker here: its canvases would never finish
        ALERT_ARCHIVE_URL=str(tmp_path / "archive"),
        XMATCH_LOCAL_INDEX=str(tmp_path / "no_index.npz"),
        BROKER_VAR_DIR=str(tmp_path / "var"),
        **{f"BROKER_QUEUE_{q.upper()}": f"{q}-{suffix}" for q in ("ingest", "io", "cpu", "gpu")},
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    marker = tmp_path / "killed.pid"
    worker_env = dict(env, BROKER_FAULT_KILL_PUBLISH=str(marker))
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "broker_site", "worker", "-Q",
         ",".join(f"{q}-{suffix}" for q in ("ingest", "io", "cpu")), "--concurrency", "1",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", f"i18-{suffix}@%h"],
        env=worker_env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield env, manage, f"{pg_url}/{name}", redis.Redis.from_url(f"{redis_url}/{REDIS_DB}"), stream, marker, \
            tmp_path / "worker.log"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        redis.Redis.from_url(f"{redis_url}/{REDIS_DB}").flushdb()
        with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_worker_killed_mid_publish_sends_every_alert_once(farm):
    import psycopg

    from pipeline.output import streams

    env, manage, db_url, client, stream, marker, worker_log = farm
    folders = [require_shared("lsst_alerts", "rubin_v10_0"), require_shared("ztf_alerts_older_schemas")]
    run = subprocess.run(manage + ["ingest", *map(str, folders), "--batch-size", "30", "--no-progress"],
                         env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "steps failed" not in run.stdout, run.stdout + worker_log.read_text()[-3000:]
    assert marker.exists(), "the fault hook never fired: no worker was killed"
    assert "WorkerLostError" in worker_log.read_text() or "SIGKILL" in worker_log.read_text()

    on_stream = Counter(streams.decode(fields[b"avro"])["candid"] for _, fields in client.xrange(stream))
    with psycopg.connect(db_url) as conn:
        ingested = {row[0] for row in conn.execute("SELECT candid FROM raw_alert")}
        published = conn.execute("SELECT count(*) FROM published_alert").fetchone()[0]
    assert set(on_stream) == ingested and len(ingested) == 37
    assert max(on_stream.values()) == 1
    assert published == len(ingested)
