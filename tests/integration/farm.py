"""A worker farm of real processes for the fault tests: a PostgreSQL database, Redis (the shared server
with this run's own db number and queue names, or a redis-server of the test's own on its own port),
`celery worker` subprocesses and `manage.py` subprocesses. Everything is stopped and dropped at the end."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

from tests.conftest import REPO_ROOT

COUNTED = ["object", "detection", "non_detection", "forced_photometry", "ps1_ztf", "gaia_ztf", "ss_ztf", "raw_alert",
           "quarantine", "magstat", "feature", "feature_state", "xmatch_pending", "probability", "outlier_score"]
WORKER_APP = "broker-worker"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, persisting to its folder (append-only file), so that a stop and
    a restart keep the queues as a production broker would."""

    def __init__(self, folder):
        self.folder, self.port, self.process = folder, free_port(), None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120  # a loaded machine starts it slowly
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # redis-server saves and exits on SIGTERM
            self.process.wait(timeout=120)


class Farm:
    def __init__(self, tmp_path, pg_url, redis_url, redis_db=0, **env):
        self.tmp, self.pg_url = tmp_path, pg_url
        self.db = f"broker_farm_{uuid.uuid4().hex[:10]}"
        suffix = uuid.uuid4().hex[:6]
        self.queues = {q: f"{q}-{suffix}" for q in ("ingest", "io", "cpu", "gpu")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "DATABASE_URL"))}
        self.env.update(
            DATABASE_URL=f"{pg_url}/{self.db}",
            CELERY_BROKER_URL=f"{redis_url}/{redis_db}" if redis_url else "",
            ALERT_ARCHIVE_URL=str(tmp_path / "archive"),
            XMATCH_LOCAL_INDEX=str(tmp_path / "no_index.npz"),
            BROKER_VAR_DIR=str(tmp_path / "var"),
            OUTPUT_STREAM_URL="",  # publishing has its own tests; none into the shared Redis here
            STAMP_CLASSIFIER="off",  # no gpu-queue worker in these farms
            **{f"BROKER_QUEUE_{q.upper()}": name for q, name in self.queues.items()},
        )
        self.env.update(env)
        self.workers = []
        self.redis_url = self.env["CELERY_BROKER_URL"]

    def __enter__(self):
        import psycopg

        with psycopg.connect(f"{self.pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.manage("migrate", "--noinput", check=True)
        return self

    def __exit__(self, *exc):
        import psycopg
        import redis

        for worker in self.workers:
            self.stop_worker(worker, signal.SIGKILL)
        if self.redis_url:
            try:
                redis.Redis.from_url(self.redis_url, socket_timeout=3).flushdb()
            except redis.RedisError:
                pass
        with psycopg.connect(f"{self.pg_url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def manage(self, *args, check=False, timeout=600, env=None):
        result = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args], env={**self.env, **(env or {})},
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def manage_async(self, *args, log_name, env=None):
        log = open(self.tmp / log_name, "w")
        return subprocess.Popen([sys.executable, str(REPO_ROOT / "manage.py"), *args], env={**self.env, **(env or {})},
                                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self, queues=("ingest", "io", "cpu"), concurrency=2, name="w"):
        log = self.tmp / f"worker-{name}.log"
        env = dict(self.env, DATABASE_URL=f"{self.env['DATABASE_URL']}?application_name={WORKER_APP}")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "broker_site", "worker", "-Q",
             ",".join(self.queues[q] for q in queues), "--concurrency", str(concurrency), "--without-gossip",
             "--without-mingle", "--loglevel", "INFO", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h"],
            env=env, cwd=REPO_ROOT, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        worker.log = log
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker, sig=signal.SIGTERM):
        if worker.poll() is None:
            try:
                os.killpg(worker.pid, sig)
                worker.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)

    def sql(self, query, params=None):
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def counts(self):
        return {table: self.sql(f"SELECT count(*) FROM {table}")[0][0] for table in COUNTED}

    def worker_logs(self, tail=3000):
        return "\n".join(w.log.read_text()[-tail:] for w in self.workers)


def wait_for(predicate, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def small_night(folder, n=150):
    """The first ``n`` real packets of ../shared/data/ztf_alerts, copied to ``folder``."""
    from tests.conftest import require_shared

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(require_shared("ztf_alerts").glob("*.avro"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder
