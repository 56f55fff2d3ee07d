import importlib
import os

from django.conf import settings
from django.core.management.base import BaseCommand

RUNNERS = {  # what -> (module of pipeline/bench, function(out, opts))
    "ingest": ("ingest", "run_ingest_bench"),
    "ingest-db": ("ingest", "run_ingest_db"),
    "features": ("features", "run_feature_bench"),
    "classify": ("classify", "run_classify_bench"),
    "stamps": ("stamps", "run_stamp_bench"),
    "pipeline": ("pipeline", "run_pipeline_bench"),
    "pipeline-play": ("pipeline", "run_play"),
}

class Command(BaseCommand):
    help = (
        "Benchmarks. `bench ingest`: alerts/s of bare fastavro decoding (the ceiling), parsing, archiving, and "
        "the full ingest into SQLite and PostgreSQL, plus per-step latency. `bench features`: objects/s of the "
        "light-curve features, per group. `bench classify`: objects/s of the light-curve classifier from stored "
        "features (one core) and its per-alert cost on a replayed real night. `bench stamps`: alerts/s of the stamp "
        "classifier's cutout decoding + preprocessing and inference, per CPU core (--threads) or on a GPU."
    )

    def add_arguments(self, parser):
        parser.add_argument("what", choices=list(RUNNERS))
        parser.add_argument("--alerts", type=int, default=3000, help="Replayed alerts (ingest)")
        parser.add_argument("--batch-size", type=int, default=settings.ALERT_BATCH_SIZE)
        parser.add_argument("--data", nargs="+", default=[str(settings.SHARED_DATA_DIR / "ztf_alerts")], help="Folders of real packets")
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
        module, function = RUNNERS[what]
        getattr(importlib.import_module(f"pipeline.bench.{module}"), function)(self.stdout, opts)
