"""`reprocess` is a writer: on SQLite it takes the writer lock, so beside `ingest` or `repair` it waits
instead of failing half-way with "database is locked"."""
import fcntl
import os
import sqlite3
import subprocess
import sys

import pytest

from pipeline.simulation.night import simulate_night
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                reason="SQLite's writer lock (PostgreSQL takes many writers)")


def test_reprocess_waits_for_the_writer_lock(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "DATABASE_URL", "CELERY_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/one.sqlite3", BROKER_VAR_DIR=str(tmp_path / "var"),
               ALERT_ARCHIVE_URL=str(tmp_path / "archive"), XMATCH_LOCAL_INDEX=str(tmp_path / "none.npz"),
               OUTPUT_STREAM_URL="", STAMP_CLASSIFIER="off")
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    simulate_night(tmp_path / "night", 8, seed=11)
    for command in (["migrate", "--noinput"], ["ingest", str(tmp_path / "night"), "--no-progress"]):
        subprocess.run(manage + command, env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    database = tmp_path / "one.sqlite3"

    def timings():
        with sqlite3.connect(database) as conn:
            return conn.execute("SELECT count(*) FROM step_timing").fetchone()[0]

    before = timings()
    with open(tmp_path / "one.sqlite3.writer-lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another writer (an ingest, say) holds the database
        lock.write("the test")
        lock.flush()
        run = subprocess.Popen(manage + ["reprocess", "--all"], env=env, cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = run.stderr.readline()  # blocks until reprocess says something or exits
            assert "is being written by the test" in first and "this reprocess waits" in first, first
            assert run.poll() is None and timings() == before  # waiting, nothing written
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "reprocessed 8 objects" in out
    assert timings() > before
