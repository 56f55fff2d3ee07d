"""SQLite takes one writer at a time: writing commands hold one lock per database file, and a second
one waits for it, saying so, instead of failing half-way with "database is locked"."""
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from django.db import connection


def _sqlite_file():
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    return None if "memory" in name or not name else Path(name)


@contextmanager
def database_writer(label, stream=None):
    """Hold the writer lock of the SQLite database (nothing to do on PostgreSQL) while the block runs."""
    path = _sqlite_file()
    if path is None:
        yield
        return
    stream = stream or sys.stderr
    with open(path.with_name(path.name + ".writer-lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            print(f"SQLite database {path.name} is being written by {holder}; SQLite takes one writer at a "
                  f"time, so this {label} waits for it to finish (PostgreSQL takes many).", file=stream, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{label} (pid {os.getpid()})")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)
