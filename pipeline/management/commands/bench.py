import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline import bench



class Command(BaseCommand):
    help = (
        "Benchmarks. `bench ingest`: alerts/s of bare fastavro decoding (the ceiling), parsing, archiving, and "
        "the full ingest into SQLite and PostgreSQL, plus per-step latency. `bench features`: objects/s of the "
        "light-curve features, per group. `bench classify`: objects/s of the light-curve classifier from stored "
        "features (one core) and its per-alert cost on a replayed real night. `bench stamps`: alerts/s of the stamp "
        "classifier's cutout decoding + preprocessing and inference, per CPU core (--threads) or on a GPU."
    )

    def add_arguments(self, parser):
        parser.add_argument("what", choices=["ingest", "features", "ingest-db", "classify", "stamps", "pipeline",
                                             "pipeline-play"])
        parser.add_argument("--alerts", type=int, default=3000, help="Replayed alerts (ingest)")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--data", nargs="+", default=[str(bench.SHARED_DATA / "ztf_alerts")], help="Folders of real packets")
        parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
                            help="PostgreSQL server for the database stage ('' to skip)")
        parser.add_argument("--packets", help=("(internal) folder of replayed packets for ingest-db"))
        parser.add_argument("--objects", type=int, default=300, help="Simulated objects (features)")
        parser.add_argument("--repeat", type=int, default=3, help="Runs per stage; the median is printed")
        parser.add_argument("--rate", type=float, default=25.0, help="Alerts per second (pipeline)")
        parser.add_argument("--window", type=float, default=1.0, help="Seconds of alerts per batch (pipeline)")
        parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
                            help="Redis broker for the pipeline benchmark's workers")
        parser.add_argument("--cpu-concurrency", type=int, default=3, help="Processes of the cpu worker (pipeline)")
        parser.add_argument("--warmup", type=int, default=100, help="Uncounted alerts played first (pipeline)")
        parser.add_argument("--png", help="Cumulative distribution of the latencies (pipeline)")
        parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (stamps)")
        parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024], help="Inference batches (stamps)")

    def handle(self, *args, what, **opts):
        if what == "ingest":
            self.bench_ingest(opts)
        elif what == "pipeline":
            self.bench_pipeline(opts)
        elif what == "pipeline-play":
            from pipeline import bench_pipeline, timing

            figures, lat = bench_pipeline.play(opts["packets"], opts["rate"], opts["window"], settings.CELERY_BROKER_URL,
                                               [settings.QUEUE_INGEST, settings.QUEUE_IO, settings.QUEUE_CPU,
                                                settings.QUEUE_GPU], wait_timeout=600, warmup=opts["warmup"])
            if opts["png"] and lat:
                timing.plot_cdf(lat, opts["png"], title=f"{figures['alerts']} replayed alerts at {opts['rate']:g}/s")
            self.stdout.write(json.dumps(figures))
        elif what == "classify":
            from pipeline.management.commands._bench_classify import run_classify_bench

            run_classify_bench(self.stdout, opts, self)
        elif what == "stamps":
            from pipeline.management.commands._bench_stamps import run_stamp_bench

            run_stamp_bench(self.stdout, opts)
        elif what == "ingest-db":
            self.stdout.write(json.dumps(self.ingest_db(opts["packets"], opts["batch_size"], opts["repeat"])))
        else:
            from pipeline.management.commands._bench_features import run_feature_bench

            run_feature_bench(self.stdout, opts)

    def bench_ingest(self, opts):
        folders = [Path(p) for p in opts["data"]]
        if not any(f.exists() for f in folders):
            raise CommandError(f"no packets: {', '.join(map(str, folders))} absent (the real ZTF packets of ../shared/data)")
        packets = bench.replay_packets([f for f in folders if f.exists()], opts["alerts"])
        n = len(packets)
        self.stdout.write(f"{n} replayed real ZTF alerts, batches of {opts['batch_size']}, one process\n")
        repeat = opts["repeat"]
        self.stdout.write(f"(median of {repeat} runs per stage; this machine's speed varies from run to run)")
        ceiling = bench.median_rate(bench.bench_decode, packets, repeat)
        self.stdout.write(f"  bare fastavro decoding        {ceiling:8.0f} alerts/s  (ceiling)")
        self.stdout.write(f"  parse (decode + adapter)      {bench.median_rate(bench.bench_parse, packets, repeat):8.0f} alerts/s")
        self.stdout.write(f"  archive write (local folder)  {bench.median_rate(bench.bench_archive, packets, repeat):8.0f} alerts/s")
        with tempfile.TemporaryDirectory() as folder:
            for i, data in enumerate(packets):
                Path(folder, f"{i:07d}.avro").write_bytes(data)
            targets = [("SQLite", f"sqlite:///{folder}/bench.sqlite3", None)]
            if opts["postgres"]:
                targets.append(("PostgreSQL", None, opts["postgres"]))
            for label, url, server in targets:
                try:
                    result = self.run_db_stage(folder, opts["batch_size"], repeat, url, server)
                except Exception as exc:  # the other backend's figures still print
                    self.stdout.write(f"  full ingest into {label:<10}  skipped: {exc}")
                    continue
                self.stdout.write(
                    f"  full ingest into {label:<10}    {result['alerts_per_s']:8.0f} alerts/s  "
                    f"= {100 * result['alerts_per_s'] / ceiling:.0f}% of bare decoding "
                    f"(runs: {', '.join(f'{r:.0f}' for r in result['alerts_per_s_runs'])}; batch latency median "
                    f"{result['batch_latency_median_s']:.3f} s, max {result['batch_latency_max_s']:.3f} s)"
                )
                for step, seconds in result["steps"].items():
                    self.stdout.write(f"      step {step:<10} {seconds:7.3f} s per batch  ({seconds / opts['batch_size'] * 1000:.2f} ms per alert)")

    def bench_pipeline(self, opts):
        from pipeline import bench_pipeline

        folder = Path(opts["data"][0])
        if not folder.exists():
            raise CommandError(f"no packets: {folder} absent (the real ZTF packets of ../shared/data)")
        if not opts["postgres"]:
            raise CommandError("the pipeline benchmark needs PostgreSQL (--postgres)")
        with tempfile.TemporaryDirectory() as work:
            f = bench_pipeline.run(work, folder, opts["rate"], opts["alerts"], opts["postgres"], opts["redis"],
                                   window=opts["window"], cpu_concurrency=opts["cpu_concurrency"], png=opts["png"],
                                   warmup=opts["warmup"])
        growing = f["queue_growth_per_min"] * f["played_s"] / 60 > 10  # more than 10 tasks more queued at the end
        lag = f["played_s"] - f["alerts"] / f["rate"]
        self.stdout.write(
            f"{f['alerts']} replayed real ZTF alerts (new ids) at {f['rate']:g} alerts/s, batches every "
            f"{opts['window']:g} s, workers: ingest+io, cpu x{opts['cpu_concurrency']}, gpu; Redis + PostgreSQL\n"
            f"  stream played in {f['played_s']:.1f} s (late by {lag:.1f} s), all steps done at {f['done_s']:.1f} s\n"
            f"  throughput {f['throughput']:.1f} alerts/s; queued tasks max {f['queue_max']}, mean "
            f"{f['queue_first_third']:.1f} in the first third, {f['queue_last_third']:.1f} in the last, "
            f"trend {f['queue_growth_per_min']:+.1f} per minute "
            f"({'GROWING: not sustained' if growing or lag > 2 else 'steady: sustained'})\n"
            f"  canvases {f['canvases']}" + (f"; failures: {f['failures']}" if f["failures"] else "")
        )
        self.stdout.write("  seconds from ingestion to step done, per alert:")
        for step, p in f["percentiles"].items():
            self.stdout.write(f"    {step:<14} p50 {p['p50']:7.2f}   p95 {p['p95']:7.2f}   p99 {p['p99']:7.2f}")
        if opts["png"]:
            self.stdout.write(f"  cumulative distribution: {opts['png']}")

    def run_db_stage(self, folder, batch_size, repeat, sqlite_url, pg_server):
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

    def ingest_db(self, folder, batch_size, repeat):
        from pipeline.backends import archive
        from pipeline.models import RawAlert

        packets = [p.read_bytes() for p in sorted(Path(folder).glob("*.avro"))]
        runs = []
        for i in range(repeat):
            if i:
                empty_tables()
            runs.append(bench.bench_ingest_db(packets, batch_size, archive()))
        result = sorted(runs, key=lambda run: run["alerts_per_s"])[len(runs) // 2]
        result["alerts_per_s_runs"] = [run["alerts_per_s"] for run in runs]
        batches = {}
        for batch_id, oid in RawAlert.objects.values_list("batch_id", "oid"):
            batches.setdefault(batch_id, set()).add(oid)
        result["steps"] = bench.bench_steps([(b, sorted(o)) for b, o in sorted(batches.items())][:3])
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
