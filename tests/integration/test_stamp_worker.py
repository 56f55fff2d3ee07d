"""The stamp classifier on a real `-Q gpu` worker (here without a GPU: it runs on the CPU and says so)."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, require_shared
from tests.integration.test_worker_postgres import farm  # noqa: F401  (the farm fixture)

pytestmark = pytest.mark.services


@pytest.fixture
def gpu_worker(farm):  # noqa: F811
    env, manage, db_url, _ = farm
    env = dict(env, STAMP_CLASSIFIER="on")
    log_path = env["BROKER_VAR_DIR"] + "-gpu-worker.log"
    log = open(log_path, "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "broker_site", "worker", "-Q", env["BROKER_QUEUE_GPU"],
         "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
         "-n", f"gpu-{env['BROKER_QUEUE_GPU']}@%h"],
        env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield env, manage, db_url, log_path
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()


def test_gpu_queue_worker_classifies_new_objects_on_the_cpu(gpu_worker, tmp_path):
    env, manage, db_url, log_path = gpu_worker
    source = require_shared("ztf_alerts")
    folder = tmp_path / "packets"
    folder.mkdir()
    for path in sorted(source.glob("*.avro"))[:40]:
        shutil.copy(path, folder / path.name)
    run = subprocess.run(manage + ["ingest", str(folder), "--batch-size", "20", "--no-progress"],
                         env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "steps failed" not in run.stdout, run.stdout + run.stderr[-2000:]

    import psycopg

    with psycopg.connect(db_url) as conn:
        n_objects = conn.execute("SELECT count(*) FROM object").fetchone()[0]
        per_object = conn.execute(
            "SELECT count(*), round(sum(probability)::numeric, 4) FROM probability "
            "WHERE classifier_name = 'stamp_classifier' GROUP BY oid"
        ).fetchall()
    assert len(per_object) == n_objects > 0
    assert {tuple(map(float, row)) for row in per_object} == {(5.0, 1.0)}
    worker_log = open(log_path).read()
    assert "pipeline.tasks.stamp_classify" in worker_log
    assert "no GPU visible to TensorFlow, running on the CPU" in worker_log
