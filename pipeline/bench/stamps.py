"""`bench stamps`: alerts/s of cutout decoding + preprocessing, and of the CNN's inference, per CPU core."""
import os
import statistics
import time

from django.conf import settings


def real_alert_records(n_alerts):
    """Decoded Avro records of the real packets with cutouts, repeated up to ``n_alerts``."""
    from pipeline.surveys.ztf import decode_container

    folder = settings.SHARED_DATA_DIR / "ztf_alerts"
    records = [r for p in sorted(folder.glob("*.avro")) for r in decode_container(p.read_bytes())]
    records = [r for r in records if r.get("cutoutScience")]
    if not records:
        raise ValueError(f"no packets with cutouts under {folder}")
    return (records * (n_alerts // len(records) + 1))[:n_alerts]


def _median_rate(fn, n, repeat):
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates), rates


def run_stamp_bench(stdout, opts):
    threads = opts["threads"]
    import tensorflow as tf  # threads must be set before TensorFlow runs anything

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from django.conf import settings

    from pipeline.steps import stamps

    n, repeat = opts["alerts"], opts["repeat"]
    records = real_alert_records(n)
    model = stamps.StampClassifier.load(settings.STAMP_CLASSIFIER_DIR)
    stdout.write(f"{n} real ZTF alerts (the packets of ../shared/data/ztf_alerts, repeated); model {model.version}; "
                 f"median of {repeat} runs")

    def prepare():
        batch = stamps.prepare_alerts(records)
        return stamps.preprocess_images(batch.stacks), model.scaler.transform(batch.features)

    rate, runs = _median_rate(prepare, n, repeat)
    stdout.write(f"  decode 3 cutouts (astropy) + preprocess, one process: {rate:8.0f} alerts/s per core "
                 f"(runs {', '.join(f'{r:.0f}' for r in runs)})")
    images, features = prepare()
    device = stamps.device_description()
    for batch_size in opts["batch_sizes"]:
        model.predict_arrays(images[:batch_size], features[:batch_size], batch_size)  # trace once
        rate, runs = _median_rate(lambda: model.predict_arrays(images, features, batch_size), n, repeat)
        per_core = f"{rate / threads:8.0f} alerts/s per core" if not device.startswith("GPU") else "on the GPU"
        stdout.write(f"  inference, batch {batch_size:>5}, {device}, {threads} thread(s): {rate:8.0f} alerts/s "
                     f"= {per_core} (runs {', '.join(f'{r:.0f}' for r in runs)})")
    stdout.write(f"  (CPU cores on this machine: {os.cpu_count()}; aim: 1,000 alerts/s per core, 20,000/s on a GPU)")
