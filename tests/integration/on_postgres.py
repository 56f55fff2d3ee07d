"""Run the integration tests a second time with PostgreSQL as the database (`make test` does).

The first run uses the embedded default (SQLite); this one exercises the PostgreSQL code paths of
every step. PostgreSQL is started if it is installed but stopped; without it the run is skipped.
"""
import os
import subprocess
import sys

from tests.integration.services import PG_HOST, PG_PORT, PG_USER, _start_postgres, ensure_running


def main():
    problem = ensure_running("PostgreSQL", PG_HOST, PG_PORT, _start_postgres)
    if problem:
        print(f"integration tests on PostgreSQL skipped: {problem}")
        return 0
    env = dict(os.environ, DATABASE_URL=f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{os.environ.get('TEST_PG_DB', 'broker_tests')}")
    print("integration tests again, on PostgreSQL", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", "tests/integration", "-m", "not services", *sys.argv[1:]], env=env)


if __name__ == "__main__":
    sys.exit(main())
