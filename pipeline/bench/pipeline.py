"""Sustained-load benchmark: real packets replayed at a fixed rate through the whole step graph on real
workers (Redis broker, PostgreSQL), as `manage.py bench pipeline --rate R --alerts N` runs it.

The parent process makes a fresh database, starts the workers (the `make workers` layout) and a child
process that plays the alert stream: every ``window`` seconds it ingests the alerts that have arrived
(at ``rate`` per second) as one batch and launches its canvas, sampling the queue lengths meanwhile.
"""
import copy
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fastavro
import numpy as np
from django.conf import settings
from django.core.management.base import CommandError

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def renumber_oid(oid, k):
    """A new ZTF-shaped id for copy ``k`` (``ZTF`` + 2 digits + 7 lowercase letters, shifted in base 26)."""
    head, tail = oid[:5], oid[5:12]
    if len(tail) != 7 or not set(tail) <= set(LETTERS):
        return f"{oid[:24]}{k:06d}"
    value = 0
    for ch in tail:
        value = value * 26 + LETTERS.index(ch)
    value = (value + k * 104_729) % 26**7
    letters = []
    for _ in range(7):
        value, r = divmod(value, 26)
        letters.append(LETTERS[r])
    return head + "".join(reversed(letters))


def replay(folder, n_alerts, first_copy=1):
    """``n_alerts`` packets re-encoded from the real ones of ``folder``, each copy with new ids
    (objectId, candid and the history's candids) and its history shifted by a few seconds."""
    originals = []
    for path in sorted(Path(folder).glob("*.avro")):
        with open(path, "rb") as fh:
            reader = fastavro.reader(fh)
            originals.extend((reader.writer_schema, record) for record in reader)
    if not originals:
        raise ValueError(f"no .avro packets under {folder}")
    parsed, packets, k = {}, [], first_copy
    while True:
        for schema, record in originals:
            if len(packets) == n_alerts:
                return packets
            schema = parsed.setdefault(id(schema), fastavro.parse_schema(schema))
            record = copy.deepcopy(record)
            shift = k * 1_000_000_007
            record["objectId"] = renumber_oid(record["objectId"], k)
            record["candid"] += shift
            record["candidate"]["candid"] = record["candid"]
            for prv in record.get("prv_candidates") or []:
                if prv.get("candid") is not None:
                    prv["candid"] += shift
                prv["jd"] += k * 1e-5
            out = io.BytesIO()
            fastavro.writer(out, schema, [record])
            packets.append(out.getvalue())
        k += 1


def play(packet_dir, rate, window, redis_url, queues, wait_timeout, warmup=0):
    """The child: play the stream at ``rate`` alerts/s, then wait for every canvas; returns the figures.
    The first ``warmup`` packets go first as one batch, not counted (the workers compile their numba code)."""
    import redis
    from django.db import close_old_connections

    from pipeline.backends import archive
    from pipeline.ingest.batch import ingest_batch
    from pipeline.ingest.runner import ingest_retrying
    from pipeline.ingest.sources import Packet
    from pipeline.workflow import batches, timing

    items = [Packet(p.name, p.read_bytes()) for p in sorted(Path(packet_dir).glob("*.avro"))]
    if warmup:
        result = ingest_batch(items[:warmup], archive())
        batches.launch(result.batch_id, result.oids, result.new_oids)
        batches.wait([result.batch_id], timeout=wait_timeout)
        items = items[warmup:]
    client = redis.Redis.from_url(redis_url)
    samples, batch_ids = [], []
    start = time.monotonic()
    sent = 0
    next_cut = start + window
    while sent < len(items):
        now = time.monotonic()
        if now < next_cut:
            time.sleep(min(0.05, next_cut - now))
            continue
        due = min(len(items), int((now - start) * rate))
        if due > sent:
            result = ingest_retrying(items[sent:due])
            batches.launch(result.batch_id, result.oids, result.new_oids)
            batch_ids.append(result.batch_id)
            sent = due
        samples.append((round(time.monotonic() - start, 2), sum(client.llen(q) for q in queues)))
        next_cut += window
    played = time.monotonic() - start
    while True:  # drain, sampling the queues
        still = batches.wait(batch_ids, timeout=1.0, poll=0.5)
        samples.append((round(time.monotonic() - start, 2), sum(client.llen(q) for q in queues)))
        if not still or time.monotonic() - start > played + wait_timeout:
            break
    done = time.monotonic() - start
    close_old_connections()
    lat = timing.latencies(batch_ids)
    counts, failures = batches.summary(batch_ids)
    third = max(1, len([s for s in samples if s[0] <= played]) // 3)
    during = [q for t, q in samples if t <= played]
    times = [t for t, q in samples if t <= played]
    slope = float(np.polyfit(times, during, 1)[0]) if len(during) > 2 else 0.0
    return {
        "alerts": len(items), "rate": rate, "played_s": played, "done_s": done,
        "throughput": len(items) / done, "drain_s": done - played,
        "queue_max": max(during or [0]), "queue_growth_per_min": slope * 60, "queue_first_third": statistics.mean(during[:third] or [0]),
        "queue_last_third": statistics.mean(during[-third:] or [0]),
        "canvases": counts, "failures": failures[:5],
        "percentiles": {step: {f"p{q}": float(np.percentile(v, q)) for q in (50, 95, 99)} for step, v in lat.items()},
        "samples": samples,
    }, lat


class Workers:
    """The `make workers` layout, started for the benchmark with its own queue names."""

    def __init__(self, env, log_dir, cpu_concurrency=3, io_concurrency=2):
        self.env, self.log_dir, self.processes = env, Path(log_dir), []
        self.groups = [("ingest_io", "BROKER_QUEUE_INGEST,BROKER_QUEUE_IO", io_concurrency),
                       ("cpu", "BROKER_QUEUE_CPU", cpu_concurrency), ("gpu", "BROKER_QUEUE_GPU", 1)]

    def __enter__(self):
        for name, variables, concurrency in self.groups:
            queues = ",".join(self.env[v] for v in variables.split(","))
            log = open(self.log_dir / f"worker-{name}.log", "w")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "broker_site", "worker", "-Q", queues, "-c", str(concurrency),
                 "--without-gossip", "--without-mingle", "-n", f"bench-{name}-{uuid.uuid4().hex[:4]}@%h",
                 "--loglevel", "WARNING"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)


def run(base_dir, data_dir, rate, n_alerts, postgres, redis_url, window=1.0, cpu_concurrency=3, io_concurrency=2,
        png=None, wait_timeout=600, warmup=100):
    """The parent: fresh database, workers, the playing child; returns the child's figures."""
    import psycopg
    import redis

    work = Path(base_dir)
    packets = work / "packets"
    packets.mkdir(parents=True)
    for i, data in enumerate(replay(data_dir, n_alerts + warmup)):
        (packets / f"{i:07d}.avro").write_bytes(data)
    database = f"bench_pipeline_{uuid.uuid4().hex[:8]}"
    suffix = uuid.uuid4().hex[:6]
    env = dict(os.environ, DATABASE_URL=f"{postgres}/{database}", CELERY_BROKER_URL=redis_url,
               ALERT_ARCHIVE_URL=str(work / "archive"), XMATCH_LOCAL_INDEX=str(work / "none.npz"),
               BROKER_VAR_DIR=str(work / "var"), OUTPUT_STREAM_URL="",  # no publishing into a shared stream
               **{f"BROKER_QUEUE_{q.upper()}": f"bench-{q}-{suffix}" for q in ("ingest", "io", "cpu", "gpu")})
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(Path(__file__).resolve().parent.parent / "manage.py")]
    with psycopg.connect(f"{postgres}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        subprocess.run(manage + ["migrate", "--noinput"], env=env, check=True, capture_output=True)
        with Workers(env, work, cpu_concurrency, io_concurrency):
            time.sleep(5)  # workers up before the stream starts
            args = ["bench", "pipeline-play", "--packets", str(packets), "--rate", str(rate), "--window", str(window),
                    "--warmup", str(warmup)]
            if png:
                args += ["--png", str(png)]
            out = subprocess.run(manage + args, env=env, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        redis.Redis.from_url(redis_url).delete(*[env[f"BROKER_QUEUE_{q.upper()}"] for q in ("ingest", "io", "cpu", "gpu")])
        with psycopg.connect(f"{postgres}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run_pipeline_bench(out, opts):
    """`bench pipeline`: replay real packets at a fixed rate through every step on real workers; print the figures."""
    folder = Path(opts["data"][0])
    if not folder.exists():
        raise CommandError(f"no packets: {folder} absent (the real ZTF packets of ../shared/data)")
    if not opts["postgres"]:
        raise CommandError("the pipeline benchmark needs PostgreSQL (--postgres)")
    with tempfile.TemporaryDirectory() as work:
        f = run(work, folder, opts["rate"], opts["alerts"], opts["postgres"], opts["redis"],
                               window=opts["window"], cpu_concurrency=opts["cpu_concurrency"], png=opts["png"],
                               warmup=opts["warmup"])
    growing = f["queue_growth_per_min"] * f["played_s"] / 60 > 10  # more than 10 tasks more queued at the end
    lag = f["played_s"] - f["alerts"] / f["rate"]
    out.write(
        f"{f['alerts']} replayed real ZTF alerts (new ids) at {f['rate']:g} alerts/s, batches every "
        f"{opts['window']:g} s, workers: ingest+io, cpu x{opts['cpu_concurrency']}, gpu; Redis + PostgreSQL\n"
        f"  stream played in {f['played_s']:.1f} s (late by {lag:.1f} s), all steps done at {f['done_s']:.1f} s\n"
        f"  throughput {f['throughput']:.1f} alerts/s; queued tasks max {f['queue_max']}, mean "
        f"{f['queue_first_third']:.1f} in the first third, {f['queue_last_third']:.1f} in the last, "
        f"trend {f['queue_growth_per_min']:+.1f} per minute "
        f"({'GROWING: not sustained' if growing or lag > 2 else 'steady: sustained'})\n"
        f"  canvases {f['canvases']}" + (f"; failures: {f['failures']}" if f["failures"] else "")
    )
    out.write("  seconds from ingestion to step done, per alert:")
    for step, p in f["percentiles"].items():
        out.write(f"    {step:<14} p50 {p['p50']:7.2f}   p95 {p['p95']:7.2f}   p99 {p['p99']:7.2f}")
    if opts["png"]:
        out.write(f"  cumulative distribution: {opts['png']}")


def run_play(out, opts):
    """`bench pipeline-play` (the child process of ``run``): play the replayed packets at the rate."""
    from pipeline.workflow import timing

    queues = [settings.QUEUE_INGEST, settings.QUEUE_IO, settings.QUEUE_CPU, settings.QUEUE_GPU]
    figures, lat = play(opts["packets"], opts["rate"], opts["window"], settings.CELERY_BROKER_URL, queues,
                        wait_timeout=600, warmup=opts["warmup"])
    if opts["png"] and lat:
        timing.plot_cdf(lat, opts["png"], title=f"{figures['alerts']} replayed alerts at {opts['rate']:g}/s")
    out.write(json.dumps(figures))
