"""Ingest benchmark: bare fastavro decoding (the ceiling) versus each stage of our ingest.

Real packets are replayed with new ids (candid and objectId changed per copy) so that every replayed
alert is new to the database. Figures are alerts per second from one process.
"""
import copy
import io
import statistics
import tempfile
import time
from pathlib import Path

import fastavro
from django.conf import settings

from .sources import Packet

# The real data the benchmarks replay: ../shared/data beside the repository (never copied into it).
SHARED_DATA = settings.BASE_DIR.parent / "shared" / "data"


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
    from .surveys.ztf import decode_container, parse_record

    start = time.perf_counter()
    for data in packets:
        for record in decode_container(data):
            parse_record(record)
    return rate(len(packets), time.perf_counter() - start)


def bench_archive(packets):
    from .storage import LocalArchive, alert_key

    with tempfile.TemporaryDirectory() as folder:
        archive = LocalArchive(folder)
        start = time.perf_counter()
        archive.save_many((alert_key(i), data) for i, data in enumerate(packets))
        return rate(len(packets), time.perf_counter() - start)


def bench_ingest_db(packets, batch_size, archive):
    """The full ingest (parse, archive, one write per table) into the configured database."""
    from .ingest import ingest_batch

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
    from . import tasks

    timings = {}
    tasks.lc_model()  # loaded once per worker process, as in a running worker
    for batch_id, oids in oids_by_batch:
        for name in ("correct", "xmatch", "magstats", "features", "lc_classify", "outliers"):
            task = getattr(tasks, name)
            t0 = time.perf_counter()
            task.run(batch_id, oids)
            timings.setdefault(name, []).append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in timings.items()}
