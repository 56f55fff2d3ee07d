"""Real PostgreSQL and Redis for integration tests: use the running servers, start them if they are
installed but stopped, or skip with the reason."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PG_HOST, PG_PORT = os.environ.get("TEST_PG_HOST", "127.0.0.1"), int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_HOST, REDIS_PORT = os.environ.get("TEST_REDIS_HOST", "127.0.0.1"), int(os.environ.get("TEST_REDIS_PORT", "6379"))


def port_open(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(host, port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.3)
    return False


def _start_postgres():
    if not shutil.which("pg_ctlcluster"):
        return "PostgreSQL is not installed here (no pg_ctlcluster)"
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not versions:
        return "PostgreSQL is installed but has no cluster in /etc/postgresql"
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   capture_output=True, timeout=60)
    return None


def _start_redis():
    if not shutil.which("redis-server"):
        return "Redis is not installed here (no redis-server)"
    subprocess.run(["redis-server", "--daemonize", "yes", "--bind", REDIS_HOST, "--port", str(REDIS_PORT),
                    "--save", "", "--appendonly", "no"], capture_output=True, timeout=30)
    return None


def ensure_running(name, host, port, start):
    """None when the server answers on host:port (started by ``start`` if need be), else why not."""
    if port_open(host, port):
        return None
    problem = start()
    if problem or not _wait(host, port):
        return f"no {name} on {host}:{port}: {problem or 'it did not start'}"
    return None


def require_postgres():
    problem = ensure_running("PostgreSQL", PG_HOST, PG_PORT, _start_postgres)
    if problem:
        pytest.skip(problem)
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}"


def require_redis():
    problem = ensure_running("Redis", REDIS_HOST, REDIS_PORT, _start_redis)
    if problem:
        pytest.skip(problem)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"
