"""Ingest benchmark: bare fastavro decoding (the ceiling) versus each stage of our ingest.

Real packets are replayed with new ids (candid and objectId changed per copy) so that every replayed
alert is new to the database. Figures are alerts per second from one process.
"""
import copy
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fastavro
from django.conf import settings
from django.core.management.base import CommandError

from pipeline.ingest.sources import Packet

# The real data the benchmarks replay: ../shared/data beside the repository (never copied into it).


def replay_packets(folders, n_alerts):
    """``n_alerts`` packets re-encoded from the real ones, copy k with candid + k and oid suffix k."""
    originals = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.avro")):
            with open(path, "rb") as fh:
                reader = fastavro.reader(fh)
                schema = reader.writer_schema
                originals.extend((schema, record) for record in reader)
    if not originals:
        raise ValueError(f"no .avro packets under {folders}")
    parsed = {}
    packets = []
    for k in range(n_alerts // len(originals) + 1):
        for schema, record in originals:
            if len(packets) == n_alerts:
                return packets
            key = id(schema)
            if key not in parsed:
                parsed[key] = fastavro.parse_schema(schema)
            packets.append(_renumber(record, parsed[key], k))
    return packets


def _renumber(record, schema, k):
    if k == 0:
        out = io.BytesIO()
        fastavro.writer(out, schema, [record])
        return out.getvalue()
    record = copy.deepcopy(record)
    shift = k * 7  # keeps candid's digits plausible; ids stay unique across copies
    oid = record["objectId"]  # a valid ZTF id per copy: the year digits say which copy it is
    oid = f"ZTF{(int(oid[3:5]) + 30 + k) % 100:02d}{oid[5:]}"
    record["objectId"] = oid
    record["candid"] += shift
    record["candidate"]["candid"] = record["candid"]
    for prv in record.get("prv_candidates") or []:
        if prv.get("candid") is not None:
            prv["candid"] += shift
        prv["jd"] += k * 1e-5  # distinct upper limits per copy
    out = io.BytesIO()
    fastavro.writer(out, schema, [record])
    return out.getvalue()


def rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def median_rate(stage, packets, repeat):
    return statistics.median(stage(packets) for _ in range(max(1, repeat)))


def bench_decode(packets):
    """Bare fastavro: decode every packet, nothing else."""
    start = time.perf_counter()
    for data in packets:
        for _ in fastavro.reader(io.BytesIO(data)):
            pass
    return rate(len(packets), time.perf_counter() - start)


def bench_parse(packets):
    from pipeline.surveys.ztf import decode_container, parse_record

    start = time.perf_counter()
    for data in packets:
        for record in decode_container(data):
            parse_record(record)
    return rate(len(packets), time.perf_counter() - start)


def bench_archive(packets):
    from pipeline.ingest.storage import LocalArchive, alert_key

    with tempfile.TemporaryDirectory() as folder:
        archive = LocalArchive(folder)
        start = time.perf_counter()
        archive.save_many((alert_key(i), data) for i, data in enumerate(packets))
        return rate(len(packets), time.perf_counter() - start)


def bench_ingest_db(packets, batch_size, archive):
    """The full ingest (parse, archive, one write per table) into the configured database."""
    from pipeline.ingest.batch import ingest_batch

    items = [Packet(f"replay/{i}", data) for i, data in enumerate(packets)]
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    latencies = []
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        result = ingest_batch(batch, archive)
        latencies.append(time.perf_counter() - t0)
        refused = [r for r in result.quarantine_reasons if "candid" not in r[1]]  # conflicts of the real data are fine
        if refused:
            raise RuntimeError(f"replayed packets were quarantined: {refused[:3]}")
    total = time.perf_counter() - start
    return {
        "alerts_per_s": rate(len(items), total),
        "batch_latency_median_s": statistics.median(latencies),
        "batch_latency_max_s": max(latencies),
    }


def bench_steps(oids_by_batch):
    """Per-step latency of the canvas after ingest (run eagerly in this process), seconds per batch."""
    from pipeline.workflow import step_tasks

    timings = {}
    step_tasks.lc_model()  # loaded once per worker process, as in a running worker
    for batch_id, oids in oids_by_batch:
        for name in ("correct", "xmatch", "magstats", "features", "lc_classify", "outliers"):
            task = getattr(step_tasks, name)
            t0 = time.perf_counter()
            task.run(batch_id, oids)
            timings.setdefault(name, []).append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in timings.items()}


def run_ingest_bench(out, opts):
    """`bench ingest`: each stage of ingest on replayed real packets, and the full ingest into each database."""
    folders = [Path(p) for p in opts["data"]]
    if not any(f.exists() for f in folders):
        raise CommandError(f"no packets: {', '.join(map(str, folders))} absent (the real ZTF packets of ../shared/data)")
    packets = replay_packets([f for f in folders if f.exists()], opts["alerts"])
    n = len(packets)
    out.write(f"{n} replayed real ZTF alerts, batches of {opts['batch_size']}, one process\n")
    repeat = opts["repeat"]
    out.write(f"(median of {repeat} runs per stage; this machine's speed varies from run to run)")
    ceiling = median_rate(bench_decode, packets, repeat)
    out.write(f"  bare fastavro decoding        {ceiling:8.0f} alerts/s  (ceiling)")
    out.write(f"  parse (decode + adapter)      {median_rate(bench_parse, packets, repeat):8.0f} alerts/s")
    out.write(f"  archive write (local folder)  {median_rate(bench_archive, packets, repeat):8.0f} alerts/s")
    with tempfile.TemporaryDirectory() as folder:
        for i, data in enumerate(packets):
            Path(folder, f"{i:07d}.avro").write_bytes(data)
        targets = [("SQLite", f"sqlite:///{folder}/sqlite3", None)]
        if opts["postgres"]:
            targets.append(("PostgreSQL", None, opts["postgres"]))
        for label, url, server in targets:
            try:
                result = run_db_stage(folder, opts["batch_size"], repeat, url, server)
            except Exception as exc:  # the other backend's figures still print
                out.write(f"  full ingest into {label:<10}  skipped: {exc}")
                continue
            out.write(
                f"  full ingest into {label:<10}    {result['alerts_per_s']:8.0f} alerts/s  "
                f"= {100 * result['alerts_per_s'] / ceiling:.0f}% of bare decoding "
                f"(runs: {', '.join(f'{r:.0f}' for r in result['alerts_per_s_runs'])}; batch latency median "
                f"{result['batch_latency_median_s']:.3f} s, max {result['batch_latency_max_s']:.3f} s)"
            )
            for step, seconds in result["steps"].items():
                out.write(f"      step {step:<10} {seconds:7.3f} s per batch  ({seconds / opts['batch_size'] * 1000:.2f} ms per alert)")


def run_db_stage(folder, batch_size, repeat, sqlite_url, pg_server):
    """Run the database stage in a child process configured for that database."""
    env = dict(os.environ, ALERT_ARCHIVE_URL=str(Path(folder) / "archive"), CELERY_BROKER_URL="",
               XMATCH_LOCAL_INDEX=str(Path(folder) / "none.npz"))
    database = None
    if pg_server:
        import psycopg

        database = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{pg_server}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = f"{pg_server}/{database}"
    else:
        env["DATABASE_URL"] = sqlite_url
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    try:
        subprocess.run(manage + ["migrate", "--noinput"], env=env, check=True, capture_output=True)
        out = subprocess.run(manage + ["bench", "ingest-db", "--packets", folder, "--batch-size", str(batch_size),
                                        "--repeat", str(repeat)],
                             env=env, check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.CalledProcessError as exc:
        raise CommandError(exc.stderr[-2000:]) from exc
    finally:
        if database:
            import psycopg

            with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run_ingest_db(out, opts):
    out.write(json.dumps(ingest_db(opts["packets"], opts["batch_size"], opts["repeat"])))


def ingest_db(folder, batch_size, repeat):
    """`bench ingest-db` (the child process of ``run_db_stage``): ingest the packets ``repeat`` times into this database."""
    from pipeline.backends import archive
    from pipeline.models import RawAlert

    packets = [p.read_bytes() for p in sorted(Path(folder).glob("*.avro"))]
    runs = []
    for i in range(repeat):
        if i:
            empty_tables()
        runs.append(bench_ingest_db(packets, batch_size, archive()))
    result = sorted(runs, key=lambda run: run["alerts_per_s"])[len(runs) // 2]
    result["alerts_per_s_runs"] = [run["alerts_per_s"] for run in runs]
    batches = {}
    for batch_id, oid in RawAlert.objects.values_list("batch_id", "oid"):
        batches.setdefault(batch_id, set()).add(oid)
    result["steps"] = bench_steps([(b, sorted(o)) for b, o in sorted(batches.items())][:3])
    return result


def empty_tables():
    """Empty the pipeline's tables between runs (TRUNCATE on PostgreSQL: no dead rows slow the next run)."""
    from django.apps import apps
    from django.db import connection

    tables = [model._meta.db_table for model in apps.get_app_config("pipeline").get_models()]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        else:
            for table in reversed(tables):  # children before the object table they point to
                cursor.execute(f'DELETE FROM "{table}"')
