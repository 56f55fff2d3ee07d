"""The worker farm for real: PostgreSQL, a Redis broker and a separate `celery worker` process.

The real packets are ingested twice by `manage.py ingest` (a subprocess) while a worker (another
subprocess) runs the steps; row counts after the second run equal those after the first.
"""
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO_ROOT, require_shared
from tests.integration.services import require_postgres, require_redis
from tests.packets import refused_packets

pytestmark = pytest.mark.services

TABLES = ["object", "detection", "non_detection", "forced_photometry", "ps1_ztf", "gaia_ztf", "ss_ztf", "raw_alert", "quarantine",
          "magstat", "xmatch_pending"]


@pytest.fixture
def farm(tmp_path):
    import psycopg
    import redis

    pg_url, redis_url = require_postgres(), require_redis()
    name = f"broker_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    suffix = uuid.uuid4().hex[:6]
    env = dict(
        os.environ,
        DATABASE_URL=f"{pg_url}/{name}",
        CELERY_BROKER_URL=f"{redis_url}/11",
        OUTPUT_STREAM_URL=f"{redis_url}/11?stream=out-{suffix}",  # this test's db, flushed at the end
        ALERT_ARCHIVE_URL=str(tmp_path / "archive"),
        XMATCH_LOCAL_INDEX=str(tmp_path / "no_index.npz"),
        BROKER_VAR_DIR=str(tmp_path / "var"),
        STAMP_CLASSIFIER="off",  # no gpu-queue worker here; test_stamp_worker.py adds one
        **{f"BROKER_QUEUE_{q.upper()}": f"{q}-{suffix}" for q in ("ingest", "io", "cpu", "gpu")},
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    queues = ",".join(f"{q}-{suffix}" for q in ("ingest", "io", "cpu"))
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "broker_site", "worker", "-Q", queues, "--concurrency", "2",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", f"test-{suffix}@%h"],
        env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield env, manage, f"{pg_url}/{name}", tmp_path / "worker.log"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        redis.Redis.from_url(f"{redis_url}/11").flushdb()
        with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def counts(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def test_ingest_twice_through_a_real_worker(farm):
    env, manage, db_url, worker_log = farm
    folder = require_shared("ztf_alerts")
    ingest = manage + ["ingest", str(folder), "--batch-size", "200", "--no-progress"]

    first = subprocess.run(ingest, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "steps failed" not in first.stdout, first.stdout + worker_log.read_text()[-3000:]
    after_first = counts(db_url)
    second = subprocess.run(ingest, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]

    assert counts(db_url) == after_first
    n_files = len(list(folder.glob("*.avro")))
    n_stored = n_files - len(refused_packets(folder))  # placeholder rebroadcasts are refused (issue 27)
    assert after_first["raw_alert"] == n_stored
    assert after_first["magstat"] > 0 and after_first["xmatch_pending"] == after_first["object"]
    assert f"duplicates skipped   {n_stored}" in second.stdout

    import psycopg

    with psycopg.connect(db_url) as conn:
        steps = dict(conn.execute("SELECT step, count(*) FROM step_timing GROUP BY step").fetchall())
        uncorrected = conn.execute("SELECT count(*) FROM detection WHERE corrected IS NULL").fetchone()[0]
    batches = -(-n_files // 200)
    # Both runs read every batch; only the first had new alerts, so only it launched the steps.
    assert steps["ingest"] == 2 * batches and steps["correct"] == steps["magstats"] == batches
    assert uncorrected == 0
    assert "pipeline.workflow.step_tasks.correct" in worker_log.read_text()
