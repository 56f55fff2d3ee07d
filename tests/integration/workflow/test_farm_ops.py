"""Operating the farm in-process (embedded default, and PostgreSQL in the second run): poisoned objects,
repair of objects behind their detections, the processing-time report, the SQLite writer lock."""
import fcntl
import io
import os
import shutil
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command

from pipeline import steps
from pipeline.ingest.runner import ingest_paths
from pipeline.models import (
    BatchCanvas, MagStats, Object, ObjectFeatureState, OutlierScore, Probability, Quarantine, RawAlert, StepTiming,
)
from pipeline.workflow import repair, timing
from tests.conftest import REPO_ROOT, require_shared
from tests.packets import refused_packets

pytestmark = pytest.mark.django_db(transaction=True)


def night(broker_env, n):
    folder = broker_env / "night"
    folder.mkdir(exist_ok=True)
    for path in sorted(require_shared("ztf_alerts").glob("*.avro"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def test_a_poisoned_object_is_quarantined_with_its_step_and_spares_its_batch(broker_env, monkeypatch):
    folder = night(broker_env, 40)
    ingest_paths([folder], batch_size=100, pipeline=False, progress=False)
    oids = sorted(Object.objects.values_list("oid", flat=True))
    poisoned = oids[len(oids) // 2]
    real_magstats = steps.magstats.magstats

    def magstats_that_chokes(detections, *args, **kwargs):
        if poisoned in set(detections["oid"]):
            raise ValueError(f"cannot digest {poisoned}")
        return real_magstats(detections, *args, **kwargs)

    monkeypatch.setattr(steps.magstats, "magstats", magstats_that_chokes)
    call_command("repair", stdout=io.StringIO())

    row = Quarantine.objects.get(step="magstats")
    assert row.oid == poisoned and f"ValueError: cannot digest {poisoned}" in row.reason
    assert set(MagStats.objects.values_list("oid", flat=True)) == set(oids) - {poisoned}
    # The batch-mates went on to the next step; the poisoned object stays out of later repairs.
    assert set(ObjectFeatureState.objects.values_list("oid", flat=True)) >= set(oids) - {poisoned}
    assert not any(repair.find_behind().values())
    call_command("repair", stdout=io.StringIO())
    assert Quarantine.objects.filter(step="magstats").count() == 1


def test_repair_runs_every_object_behind_its_detections(broker_env):
    folder = night(broker_env, 60)
    ingest_paths([folder], batch_size=25, pipeline=False, progress=False)
    n = Object.objects.count()
    found = repair.find_behind()
    assert len(found["correct"]) == len(found["magstats"]) == len(found["features"]) == n
    # A batch the broker never accepted is found by its record as well.
    BatchCanvas.objects.create(batch_id="lost", oids=["ZTF00aaaaaaa"], state=BatchCanvas.NOT_LAUNCHED,
                               launched="2026-01-01T00:00Z")
    assert repair.find_behind()["unlaunched"] == set()  # no such object: nothing to run
    # A canvas recorded as queued whose objects are behind was lost: repair replaces it.
    BatchCanvas.objects.create(batch_id="vanished", oids=[Object.objects.first().oid], state=BatchCanvas.QUEUED,
                               launched="2026-01-01T00:00Z")

    out = io.StringIO()
    call_command("repair", "--batch-size", "20", stdout=out)
    assert f"re-ran {n} objects in {-(-n // 20)} batches" in out.getvalue()
    assert not any(repair.find_behind().values())
    assert ObjectFeatureState.objects.count() == n
    assert BatchCanvas.objects.get(batch_id="lost").state == BatchCanvas.REPAIRED
    assert BatchCanvas.objects.get(batch_id="vanished").state == BatchCanvas.REPAIRED
    # Detections that arrive later put the object behind again, for the steps that depend on them.
    Object.objects.filter(oid=Object.objects.first().oid).update(ndet=0)
    assert len(repair.find_behind()["magstats"]) == 1
    # The classifier steps: an object above the gate that lost its probabilities is behind both of them.
    classified = Probability.objects.filter(classifier_name="lc_classifier").values_list("oid", flat=True)
    assert classified.exists(), "no simulated object passed the light-curve gate"
    oid = classified.first()
    Probability.objects.filter(oid=oid).delete()
    OutlierScore.objects.filter(oid=oid).delete()
    assert repair.find_behind()["lc_classifier"] == {oid}
    call_command("repair", stdout=io.StringIO())
    assert Probability.objects.filter(oid=oid, classifier_name="lc_classifier").count() == 15
    assert not repair.find_behind()["outliers"] and OutlierScore.objects.filter(oid=oid).count() == 1


def test_timing_report_has_one_value_per_alert_and_step(broker_env, tmp_path, client):
    folder = night(broker_env, 30)
    summary = ingest_paths([folder], batch_size=10, progress=False)
    lat = timing.latencies()
    assert set(lat) >= {"ingest", "xmatch", "correct", "magstats", "features"}  # and the classifiers' steps
    assert all(len(v) == RawAlert.objects.count() == 30 for v in lat.values())
    assert list(lat)[0] == "ingest" and all((v >= 0).all() for v in lat.values())
    # One batch by hand: features end after its ingestion by exactly the stored difference.
    batch = summary.batch_ids[0]
    ingested = RawAlert.objects.filter(batch_id=batch).first().ingested
    finished = StepTiming.objects.get(batch_id=batch, step="features").finished
    assert (finished - ingested).total_seconds() in set(lat["features"])

    png = tmp_path / "cdf.png"
    out = io.StringIO()
    call_command("timing_report", "--png", str(png), stdout=out)
    assert "p95" in out.getvalue() and "features" in out.getvalue()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The dashboard shows the same figures and plot.
    page = client.get("/timing/").content.decode()
    assert f"<td>features</td><td>30</td><td>{timing.percentile_table(lat).loc['features', 'p50']:.2f}</td>" in page
    image = client.get("/timing.png")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"


def manage_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "DATABASE_URL", "CELERY_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/one.sqlite3", BROKER_VAR_DIR=str(tmp_path / "var"),
               ALERT_ARCHIVE_URL=str(tmp_path / "archive"), XMATCH_LOCAL_INDEX=str(tmp_path / "none.npz"))
    return env


@pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="SQLite's writer lock")
def test_sqlite_writers_wait_for_each_other_with_a_clear_message(tmp_path):
    folder = require_shared("ztf_alerts")
    env = manage_env(tmp_path)
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    with open(tmp_path / "one.sqlite3.writer-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this test is the first writer
        lock.write("the test")
        lock.flush()
        logs = [open(tmp_path / f"ingest{i}.log", "w+") for i in range(2)]
        runs = [subprocess.Popen(manage + ["ingest", str(folder), "--no-progress", "--batch-size", "200"], env=env,
                                 cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all("waits for it" in (tmp_path / f"ingest{i}.log").read_text()
                                                      for i in range(2)):
            time.sleep(0.5)
        assert all(run.poll() is None for run in runs)  # both waiting, nothing written
        fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        codes = [run.wait(timeout=600) for run in runs]
    finally:
        for run in runs:
            run.kill() if run.poll() is None else None
    text = [(tmp_path / f"ingest{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], text
    assert all("is being written by the test" in t for t in text)
    import sqlite3

    with sqlite3.connect(tmp_path / "one.sqlite3") as conn:
        n = len(list(folder.glob("*.avro"))) - len(refused_packets(folder))  # placeholder rebroadcasts refused
        objects = conn.execute("SELECT count(*) FROM object").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM raw_alert").fetchone()[0] == n
        assert conn.execute("SELECT count(*) FROM feature_state").fetchone()[0] == objects
    assert sum("duplicates skipped   %d" % n in t for t in text) == 1  # the second found it all stored


def test_wait_gives_up_on_a_lost_canvas_only_once_nothing_progresses(monkeypatch):
    from django.utils import timezone

    from pipeline.workflow import batches

    BatchCanvas.objects.create(batch_id="lost", oids=["ZTF20aaaaaaa"], state=BatchCanvas.QUEUED,
                               launched=timezone.now())
    monkeypatch.setattr(batches, "canvas_state", lambda record: (BatchCanvas.QUEUED, ""))  # never ends
    clock, polls = [0.0], []

    def sleep(seconds):
        polls.append(seconds)
        clock[0] += seconds
        if len(polls) <= 5:  # a step of the batch finishes during each of the first five polls
            now = timezone.now()
            StepTiming.objects.create(batch_id="lost", step=f"step{len(polls)}", started=now, finished=now)

    monkeypatch.setattr(batches.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(batches.time, "sleep", sleep)
    still = batches.wait(["lost"], stall=3, poll=1)
    assert [r.batch_id for r in still] == ["lost"]
    assert clock[0] == 5 + 3  # it waited while steps finished, then gave up 3 s after the last one
    assert str(still).startswith("1 canvas(es) still queued with no step finished on them for 3 s")
    still = batches.wait(["lost"], timeout=2, poll=1, stall=0)
    assert str(still) == "1 canvas(es) still queued after the 2 s timeout" and clock[0] == 8 + 2
    monkeypatch.undo()

    monkeypatch.setattr(batches, "canvas_state", lambda record: (BatchCanvas.QUEUED, ""))
    with pytest.raises(CommandError, match="no step finished on them for 0.2 s: lost canvases"):
        call_command("wait", "lost", "--stall", "0.2", stdout=io.StringIO())
    with pytest.raises(CommandError, match="after the 0.5 s timeout"):
        call_command("wait", "lost", "--stall", "0", "--timeout", "0.5", stdout=io.StringIO())
    assert BatchCanvas.objects.get(batch_id="lost").state == BatchCanvas.QUEUED


@pytest.mark.parametrize("fault", [ImportError("No module named 'tensorflow'"), OSError(28, "No space left on device"),
                                   MemoryError()], ids=lambda f: type(f).__name__)
def test_a_fault_of_the_worker_quarantines_nothing_and_propagates(fault):
    from pipeline.workflow import step_tasks

    calls = []

    def step(oids):
        calls.append(list(oids))
        raise fault

    with pytest.raises(type(fault)):
        step_tasks.run_isolating("magstats", step, ["ZTF20aaaaaaa", "ZTF20aaaaaab", "ZTF20aaaaaac"], "b1")
    assert calls == [["ZTF20aaaaaaa", "ZTF20aaaaaab", "ZTF20aaaaaac"]]  # the batch was not split
    assert not Quarantine.objects.exists()


def test_a_model_that_will_not_load_is_the_workers_fault_not_the_objects(broker_env, settings):
    from pipeline.workflow import stamp_step, step_tasks
    from pipeline.workflow.faults import EnvironmentFault

    folder = night(broker_env, 20)
    ingest_paths([folder], batch_size=100, pipeline=False, progress=False)
    oids = sorted(Object.objects.values_list("oid", flat=True))
    corrupt = broker_env / "model.joblib"
    corrupt.write_bytes(b"not a model at all")
    try:
        for path in (corrupt, broker_env / "missing.joblib"):
            settings.LC_CLASSIFIER_MODEL = str(path)
            step_tasks.lc_model.cache_clear()
            with pytest.raises(EnvironmentFault, match=f"light-curve classifier {path} could not be loaded"):
                step_tasks.run_isolating("outliers", lambda subset: step_tasks.lc_model() and 0, oids, "b1")
        settings.STAMP_CLASSIFIER_DIR = broker_env / "no_stamp_model"
        stamp_step.classifier.cache_clear()
        with pytest.raises(EnvironmentFault, match="stamp classifier .* could not be loaded"):
            step_tasks.run_isolating("stamp_classifier", stamp_step.classify_new_objects, oids, "b1")
    finally:
        step_tasks.lc_model.cache_clear()
        stamp_step.classifier.cache_clear()
    assert not Quarantine.objects.exists()


def test_wait_gives_up_once_the_broker_has_been_unreachable_for_the_set_time(monkeypatch):
    from django.utils import timezone

    from pipeline.workflow import batches

    BatchCanvas.objects.create(batch_id="away", oids=["ZTF20aaaaaaa"], state=BatchCanvas.QUEUED,
                               launched=timezone.now())
    monkeypatch.setattr(batches, "eager", lambda: False)
    monkeypatch.setattr(batches, "canvas_state", lambda record: (BatchCanvas.QUEUED, ""))
    alive = iter([True, False, True] + [False] * 100)  # away, back, then away for good
    monkeypatch.setattr(batches, "broker_alive", lambda: next(alive))
    clock = [0.0]
    monkeypatch.setattr(batches.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(batches.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    still = batches.wait(["away"], poll=1, stall=0, broker_wait=5)
    assert str(still) == ("1 canvas(es) still queued with the broker or its result store unreachable for 5 s: once "
                          "it is back, `manage.py repair` re-runs their objects")
    assert clock[0] == 3 + 5  # the clock started again when it came back
    assert BatchCanvas.objects.get(batch_id="away").state == BatchCanvas.QUEUED


def test_a_lost_database_connection_of_the_client_is_closed_and_tried_again(monkeypatch):
    from django.db import OperationalError, connection
    from django.utils import timezone

    from pipeline.workflow import batches

    BatchCanvas.objects.create(batch_id="b", oids=["ZTF20aaaaaaa"], state=BatchCanvas.FAILED, error="boom",
                               launched=timezone.now())
    monkeypatch.setattr(batches.time, "sleep", lambda seconds: None)
    events, real_close, real_summary = [], connection.close, batches._summary
    monkeypatch.setattr(connection, "close", lambda: events.append("close") or real_close())

    def summary_cut_off(batch_ids):
        events.append("try")
        if events.count("try") < 3:
            raise OperationalError("terminating connection due to administrator command")
        return real_summary(batch_ids)

    monkeypatch.setattr(batches, "_summary", summary_cut_off)
    assert batches.summary(["b"]) == ({"failed": 1}, ["batch b failed: boom"])
    assert events == ["try", "close", "try", "close", "try"]  # the dead connection closed before each new try
    monkeypatch.setattr(batches, "_summary", lambda ids: (_ for _ in ()).throw(OperationalError("down for good")))
    with pytest.raises(OperationalError):
        batches.summary(["b"])
