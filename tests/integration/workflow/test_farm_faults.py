"""Faults survived by the worker farm, with real processes: PostgreSQL, Redis, `celery worker` and
`manage.py` subprocesses (tests/integration/farm.py). Each test is bounded in time and cleans up.

The reference is the same small night run eagerly (no broker) into its own database: after each fault
and its recovery, every table holds exactly the rows of that undisturbed run.
"""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.farm import WORKER_APP, Farm, RedisServer, small_night, wait_for
from tests.integration.services import require_postgres, require_redis

pytestmark = [pytest.mark.services, pytest.mark.farm_faults]

# Short limits so that a dead worker's task comes back within a minute or two (the default visibility is
# 300 s), yet long enough for a step of 30 alerts on a loaded 2-core machine (models load before tasks).
FAST = dict(CELERY_TASK_TIME_LIMIT="50", CELERY_TASK_SOFT_TIME_LIMIT="40", CELERY_TASK_RETRY_BACKOFF_MAX="2",
            CELERY_VISIBILITY_TIMEOUT="60", BROKER_LOST_WAIT_SECONDS="90")
BATCH = "30"


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return small_night(tmp_path_factory.mktemp("night") / "packets", 150)


@pytest.fixture(scope="module")
def reference(night, tmp_path_factory):
    """Row counts of the undisturbed eager run."""
    pg = require_postgres()
    with Farm(tmp_path_factory.mktemp("reference"), pg, "") as farm:
        farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-progress", check=True)
        counts = farm.counts()
    assert counts["raw_alert"] == 150 and counts["feature_state"] == counts["object"] > 0
    return counts


def finish(farm, timeout=600):
    result = farm.manage("wait", "--timeout", str(timeout), timeout=timeout + 60)
    assert result.returncode == 0, result.stdout + result.stderr + farm.worker_logs()
    return result


def test_sigkill_of_a_whole_worker_mid_batch_then_restart(night, reference, tmp_path):
    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=12, **FAST) as farm:
        worker = farm.start_worker(concurrency=1, name="doomed")
        farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-wait", "--no-progress", check=True)
        assert wait_for(lambda: farm.sql("SELECT count(*) FROM step_timing WHERE step = 'correct'")[0][0] >= 1, 600)
        farm.stop_worker(worker, signal.SIGKILL)  # main process and pool, mid-way through the queued batches
        assert farm.sql("SELECT count(*) FROM batch_canvas WHERE state = 'queued'")[0][0] > 0
        busy = farm.sql("SELECT count(*) FROM feature_state")[0][0]
        assert busy < reference["feature_state"]

        farm.start_worker(concurrency=1, name="second")
        finish(farm)
        assert farm.counts() == reference
        assert farm.sql("SELECT count(*) FROM batch_canvas WHERE state <> 'done'")[0][0] == 0


def test_broker_stopped_and_restarted_during_ingestion(night, reference, tmp_path):
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with Farm(tmp_path, require_postgres(), redis_server.url, **FAST) as farm:
            farm.start_worker()
            # One alert per batch: 150 canvases, so the broker goes while batches are still being launched.
            ingest = farm.manage_async("ingest", str(night), "--batch-size", "1", "--no-progress", log_name="ingest.log")
            assert wait_for(lambda: farm.sql("SELECT count(*) FROM batch_canvas")[0][0] >= 3, 600)
            redis_server.stop()
            assert wait_for(lambda: "waits for it" in (tmp_path / "ingest.log").read_text(), 300)
            time.sleep(3)
            redis_server.start()
            assert ingest.wait(timeout=900) == 0, (tmp_path / "ingest.log").read_text()[-4000:] + farm.worker_logs()
            finish(farm)
            behind = farm.manage("repair", "--dry-run", check=True).stdout
            assert "would re-run 0 objects" in behind, behind
            assert farm.counts() == reference
    finally:
        redis_server.stop()


def test_broker_gone_for_good_stops_ingest_and_repair_finishes_the_night(night, reference, tmp_path):
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        with Farm(tmp_path, require_postgres(), redis_server.url, **dict(FAST, BROKER_LOST_WAIT_SECONDS="3")) as farm:
            farm.start_worker()
            redis_server.stop()
            stopped = farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-progress")
            assert stopped.returncode == 1
            assert "broker has been unreachable" in stopped.stderr and "manage.py repair" in stopped.stderr
            assert farm.sql("SELECT state, count(*) FROM batch_canvas GROUP BY state") == [("not_launched", 1)]
            assert farm.sql("SELECT count(*) FROM raw_alert")[0][0] == int(BATCH)  # one batch stored, then stop

            redis_server.start()
            farm.manage("repair", check=True)
            farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-progress", check=True)
            assert farm.counts() == reference
            assert farm.sql("SELECT count(*) FROM batch_canvas WHERE state = 'not_launched'")[0][0] == 0
    finally:
        redis_server.stop()


def test_terminated_database_connection_mid_step_is_retried(night, reference, tmp_path):
    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=13, **FAST) as farm:
        farm.start_worker()
        farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-pipeline", "--no-progress", check=True)
        repair = farm.manage_async("repair", "--batch-size", "10", log_name="repair.log")
        killed = set()
        deadline = time.monotonic() + 120
        while len(killed) < 3 and time.monotonic() < deadline and repair.poll() is None:
            for (pid,) in farm.sql(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database() "
                "AND state IN ('active', 'idle in transaction')", [WORKER_APP]):
                if pid not in killed and farm.sql("SELECT pg_terminate_backend(%s)", [pid])[0][0]:
                    killed.add(pid)
            time.sleep(0.05)
        assert repair.wait(timeout=900) == 0, (tmp_path / "repair.log").read_text()[-3000:] + farm.worker_logs()
        assert killed, "no step was caught mid-way"
        logs = farm.worker_logs(tail=10**8)
        assert "terminating connection due to administrator command" in logs and "Retry in" in logs
        assert farm.counts() == reference


def test_two_ingests_at_once_into_one_postgres_database(night, reference, tmp_path):
    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=14, **FAST) as farm:
        farm.start_worker()
        runs = [farm.manage_async("ingest", str(night), "--batch-size", BATCH, "--no-progress", log_name=f"i{i}.log")
                for i in range(2)]
        codes = [run.wait(timeout=900) for run in runs]
        assert codes == [0, 0], [(tmp_path / f"i{i}.log").read_text()[-2000:] for i in range(2)]
        finish(farm)
        assert farm.counts() == reference


def test_poisoned_object_is_quarantined_by_the_worker_and_spares_its_batch(night, reference, tmp_path):
    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=15, **FAST) as farm:
        worker = farm.start_worker()
        farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-pipeline", "--no-progress", check=True)
        oids = [oid for (oid,) in farm.sql("SELECT oid FROM object ORDER BY oid")]
        poisoned = oids[len(oids) // 2]
        # A detection no step can store back (NaN time; parse-time checks keep such rows out today).
        farm.sql("UPDATE detection SET mjd = 'NaN' WHERE oid = %s RETURNING candid", [poisoned])
        result = farm.manage("repair", "--batch-size", "50")
        assert result.returncode == 0, result.stdout + result.stderr + farm.worker_logs()

        [(step, reason)] = farm.sql("SELECT step, reason FROM quarantine WHERE oid = %s", [poisoned])
        assert step == "correct" and reason.startswith("correct failed: IntegrityError") and '"mjd"' in reason
        done = {oid for (oid,) in farm.sql("SELECT oid FROM feature_state")}
        assert done >= set(oids) - {poisoned}
        assert {oid for (oid,) in farm.sql("SELECT oid FROM magstat")} >= set(oids) - {poisoned}
        assert worker.poll() is None


def test_bad_input_passes_through_the_farm_without_a_crashed_worker(night, tmp_path):
    import io
    import tarfile

    bad = tmp_path / "bad"
    bad.mkdir()
    good = sorted(night.glob("*.avro"))[:5]
    data = good[0].read_bytes()
    (bad / "truncated.avro").write_bytes(data[: len(data) // 2])
    flipped = bytearray(good[1].read_bytes())
    flipped[len(flipped) // 3] ^= 0xFF
    (bad / "flipped.avro").write_bytes(bytes(flipped))
    (bad / "not_avro.avro").write_bytes(b"this is not an alert")
    (bad / "empty.avro").write_bytes(b"")
    import fastavro

    out = io.BytesIO()
    fastavro.writer(out, {"type": "record", "name": "x", "fields": [{"name": "a", "type": "int"}]}, [{"a": 1}])
    (bad / "wrong_schema.avro").write_bytes(out.getvalue())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(good[2], arcname="1.avro")
        tar.add(good[3], arcname="2.avro")
    (bad / "broken.tar.gz").write_bytes(buffer.getvalue()[:-200])
    for path in good:
        (bad / path.name).write_bytes(path.read_bytes())

    with Farm(tmp_path, require_postgres(), require_redis(), redis_db=10, **FAST) as farm:
        worker = farm.start_worker()
        # The whole folder goes to the worker's `ingest` queue (ingest_files), then each batch's canvas.
        result = farm.manage("shell", "-c", (
            "from pipeline.workflow.ops_tasks import ingest_files; "
            f"print('SUMMARY', ingest_files.delay([{str(bad)!r}], 4).get(timeout=900))"), timeout=960)
        assert "SUMMARY" in result.stdout, result.stdout + result.stderr + farm.worker_logs()
        finish(farm)
        assert worker.poll() is None
        assert farm.sql("SELECT count(*) FROM raw_alert")[0][0] == 5
        reasons = farm.sql("SELECT source, reason FROM quarantine")
        sources = " ".join(source for source, _ in reasons)
        for name in ("truncated", "flipped", "not_avro", "empty", "wrong_schema", "broken.tar.gz"):
            assert name in sources, reasons
        assert farm.sql("SELECT count(*) FROM feature_state")[0][0] == farm.sql("SELECT count(*) FROM object")[0][0]


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_a_model_that_will_not_load_fails_its_batches_then_repair_finishes_them(night, reference, tmp_path, own_redis):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    shutil.copy(REPO_ROOT / "models" / "lc_classifier" / "metrics.json", broken)
    (broken / "model.joblib").write_bytes(b"not a model")  # a corrupt file, as a failed copy leaves it
    with Farm(tmp_path, require_postgres(), own_redis.url, LC_CLASSIFIER_MODEL=str(broken / "model.joblib"),
              **FAST) as farm:
        worker = farm.start_worker()
        failed = farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-progress", timeout=900)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "light-curve classifier" in failed.stdout and "could not be loaded" in failed.stdout, failed.stdout
        # The worker's fault, not the objects': every batch failed loudly, no object quarantined for it.
        assert farm.sql("SELECT state, count(*) FROM batch_canvas GROUP BY state") == [("failed", 5)]
        assert farm.counts()["quarantine"] == reference["quarantine"]
        assert "Retry in" in farm.worker_logs(tail=10**8)

        farm.stop_worker(worker)
        farm.env["LC_CLASSIFIER_MODEL"] = str(REPO_ROOT / "models" / "lc_classifier" / "model.joblib")
        farm.start_worker()
        repaired = farm.manage("repair", timeout=900)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr + farm.worker_logs()
        assert farm.counts() == reference


def test_the_ingest_client_survives_the_termination_of_its_database_connection(night, reference, tmp_path, own_redis):
    client = "broker-ingest-client"
    with Farm(tmp_path, require_postgres(), own_redis.url, **FAST) as farm:
        farm.start_worker(concurrency=1)
        ingest = farm.manage_async("ingest", str(night), "--batch-size", "10", "--no-progress", log_name="ingest.log",
                                   env={"DATABASE_URL": f"{farm.env['DATABASE_URL']}?application_name={client}"})
        killed = {"launching": 0, "waiting": 0}
        while ingest.poll() is None and sum(killed.values()) < 8:
            launched = farm.sql("SELECT count(*) FROM batch_canvas")[0][0]
            for (pid,) in farm.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                   "AND datname = current_database()", [client]):
                if farm.sql("SELECT pg_terminate_backend(%s)", [pid])[0][0]:
                    killed["waiting" if launched == 15 else "launching"] += 1
            time.sleep(2)  # the client gets time to recover between two terminations
        assert ingest.wait(timeout=900) == 0, (tmp_path / "ingest.log").read_text()[-4000:] + farm.worker_logs()
        assert killed["waiting"] >= 2, killed  # it was cut off while it waited for the canvases too
        assert "database connection lost" in (tmp_path / "ingest.log").read_text()
        assert farm.sql("SELECT state, count(*) FROM batch_canvas GROUP BY state") == [("done", 15)]
        assert farm.counts() == reference


def test_each_worker_process_loads_its_model_before_its_first_task(night, reference, tmp_path, own_redis):
    with Farm(tmp_path, require_postgres(), own_redis.url, **FAST) as farm:
        worker = farm.start_worker(concurrency=2)
        farm.manage("ingest", str(night), "--batch-size", BATCH, "--no-progress", check=True, timeout=900)
        assert farm.counts() == reference
        lines = worker.log.read_text().splitlines()

        def first(process, pattern):
            return next((i for i, line in enumerate(lines) if f"INFO/{process}]" in line and re.search(pattern, line)),
                        None)

        processes = set(re.findall(r"INFO/(ForkPoolWorker-\d+)\] Task \S+ succeeded", "\n".join(lines)))
        assert processes, lines[-50:]
        for process in processes:  # the model came before the process's first task, outside its time limit
            loaded = first(process, "model of queue \\S+ loaded at process start")
            assert loaded is not None and loaded < first(process, "Task \\S+ succeeded"), (process, lines[-80:])
        # Loaded once per process: no task of lc_classifier or outliers loaded it again.
        loads = [line for line in lines if re.search(r"INFO/ForkPoolWorker-\d+\] loading the light-curve", line)]
        assert len(loads) == len(processes) == 2, loads
        assert not any("SoftTimeLimitExceeded" in line for line in lines)


def test_broker_lost_for_good_after_every_batch_was_launched_is_noticed_within_a_minute(night, reference, tmp_path,
                                                                                     own_redis):
    import psycopg

    # The stall limit alone would wait an hour, and a task runs until its (long) time limit: the broker's
    # liveness is what ends the wait, and the loss of the broker what ends the task.
    slow = dict(FAST, CELERY_TASK_TIME_LIMIT="240", CELERY_TASK_SOFT_TIME_LIMIT="200", CELERY_VISIBILITY_TIMEOUT="250",
                BROKER_LOST_WAIT_SECONDS="20", WAIT_STALL_SECONDS="3600")
    with Farm(tmp_path, require_postgres(), own_redis.url, **slow) as farm:
        worker = farm.start_worker(concurrency=1)
        # A magstats task that is running when the broker goes: it waits for this lock.
        with psycopg.connect(farm.env["DATABASE_URL"]) as lock:
            lock.execute("LOCK TABLE magstat IN ACCESS EXCLUSIVE MODE")
            ingest = farm.manage_async("ingest", str(night), "--batch-size", "10", "--no-progress",
                                       log_name="ingest.log")
            assert wait_for(lambda: farm.sql("SELECT count(*) FROM batch_canvas")[0][0] == 15, 600)
            assert wait_for(lambda: farm.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
                "AND datname = current_database()", [WORKER_APP])[0][0], 600)
            assert ingest.poll() is None  # every batch launched, ingest waiting for them
            own_redis.stop()
            lost = time.monotonic()
            try:
                code = ingest.wait(timeout=200)
            except subprocess.TimeoutExpired:
                pytest.fail("ingest still waits for a broker gone for good: "
                            + (tmp_path / "ingest.log").read_text()[-2000:])
            text = (tmp_path / "ingest.log").read_text()
            assert code == 1 and "unreachable for 20 s" in text and "manage.py repair" in text, text[-3000:]

            os.kill(worker.pid, signal.SIGTERM)  # the main process only, as a supervisor does: it stops promptly
            try:
                worker.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.kill(worker.pid, signal.SIGUSR1)  # Celery logs every thread's stack
                time.sleep(3)
                pytest.fail(f"worker still running 90 s after SIGTERM (broker lost {time.monotonic() - lost:.0f} s "
                            "ago): " + worker.log.read_text()[-8000:])
            lock.rollback()

        own_redis.start()
        farm.start_worker()
        repaired = farm.manage("repair", timeout=900)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr + farm.worker_logs()
        finish(farm, timeout=600)
        assert farm.counts() == reference


# What must not depend on arrival order: rows, positions, stats and both classifiers' probabilities.
CONTENT = {
    "detection": "SELECT survey, candid, oid, mjd, fid, magpsf, isdiffpos, parent_candid, magpsf_corr FROM detection",
    "object": "SELECT oid, ndet, round(meanra::numeric, 7), round(meandec::numeric, 7), firstmjd, stamp_candid "
              "FROM object",
    "magstat": "SELECT oid, fid, ndet, round(magmean::numeric, 6), round(magsigma::numeric, 6) FROM magstat",
    "probability": "SELECT oid, classifier_name, class_name, round(probability::numeric, 5), ranking FROM probability",
    "quarantine": "SELECT sha256, step, oid, candid FROM quarantine",  # the source names the file: left out
}


def test_two_concurrent_ingests_of_the_real_night_in_opposite_orders_give_the_one_ingests_tables(tmp_path):
    """../shared/data/ztf_alerts, once alone and then by two processes at once (one reading the files in
    reverse), eagerly on PostgreSQL with both classifiers: the same tables, row for row."""
    from tests.conftest import require_shared

    folder = require_shared("ztf_alerts")
    forward, backward = tmp_path / "forward", tmp_path / "backward"
    for sub in (forward, backward, tmp_path / "alone", tmp_path / "together"):
        sub.mkdir()
    paths = sorted(folder.glob("*.avro"))
    for i, path in enumerate(paths):
        shutil.copyfile(path, forward / f"{i:04d}.avro")
        shutil.copyfile(path, backward / f"{len(paths) - 1 - i:04d}.avro")

    def content(farm):
        return {table: sorted(map(tuple, farm.sql(query))) for table, query in CONTENT.items()}

    eager = dict(STAMP_CLASSIFIER="on", CELERY_TASK_RETRY_BACKOFF_MAX="2")
    with Farm(tmp_path / "alone", require_postgres(), "", **eager) as farm:
        farm.manage("ingest", str(forward), "--batch-size", "100", "--no-progress", check=True, timeout=1800)
        alone = content(farm)
    assert len(alone["detection"]) > 2000 and alone["probability"] and alone["object"]
    with Farm(tmp_path / "together", require_postgres(), "", **eager) as farm:
        runs = [farm.manage_async("ingest", str(source), "--batch-size", "100", "--no-progress", log_name=f"{name}.log")
                for name, source in (("forward", forward), ("backward", backward))]
        codes = [run.wait(timeout=1800) for run in runs]
        assert codes == [0, 0], [(tmp_path / "together" / f"{n}.log").read_text()[-3000:] for n in ("forward", "backward")]
        farm.manage("repair", "--batch-size", "100", check=True, timeout=1800)  # a stamp result overtaken in flight
        together = content(farm)
    for table in CONTENT:
        assert together[table] == alone[table], table
