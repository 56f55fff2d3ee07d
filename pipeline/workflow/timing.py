"""Step timing: each batch's id, the record every step writes when it ends a batch (StepTiming), and
the processing time per alert built from them: from its ingestion (the write of its batch) to the end
of each step on that batch, as in ALeRCE's processing-times figure (the cumulative distribution per step)."""
import socket
import time
import uuid
from statistics import median

import numpy as np
import pandas as pd
from django.db.models import Count, Min
from django.utils import timezone

from pipeline.models import RawAlert, StepTiming

PERCENTILES = (50, 90, 95, 99)


def new_batch_id():
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def record_timing(batch_id, step, started, n):
    StepTiming.objects.update_or_create(
        batch_id=batch_id,
        step=step,
        defaults=dict(started=started, finished=timezone.now(), n=n, hostname=socket.gethostname()),
    )


def step_report(batch_ids):
    """Per step: batches done, items handled and the median / max seconds a batch took."""
    rows = {}
    for step, started, finished, n in StepTiming.objects.filter(batch_id__in=batch_ids).values_list(
        "step", "started", "finished", "n"
    ):
        rows.setdefault(step, []).append(((finished - started).total_seconds(), n))
    lines = ["Steps (seconds per batch)"]
    for step in ("ingest", "xmatch", "correct", "magstats", "features", "stamp_classifier", "lc_classifier",
                 "outliers", "publish"):
        if step in rows:
            seconds = [s for s, _ in rows[step]]
            lines.append(
                f"  {step:<16} {len(seconds):>4} batches {sum(n for _, n in rows[step]):>7} items"
                f"   median {median(seconds):6.2f}   max {max(seconds):6.2f}"
            )
    return "\n".join(lines)


def latencies(batch_ids=None, since=None) -> dict:
    """{step: array of seconds, one value per alert}; steps ordered by their median."""
    alerts = RawAlert.objects.all()
    if batch_ids is not None:
        alerts = alerts.filter(batch_id__in=list(batch_ids))
    if since is not None:
        alerts = alerts.filter(ingested__gte=since)
    per_batch = pd.DataFrame(
        alerts.values("batch_id").annotate(n=Count("candid"), ingested=Min("ingested")).values_list(
            "batch_id", "n", "ingested"),
        columns=["batch_id", "n", "ingested"],
    )
    if per_batch.empty:
        return {}
    steps = pd.DataFrame(
        StepTiming.objects.filter(batch_id__in=list(per_batch["batch_id"])).values_list("batch_id", "step", "finished"),
        columns=["batch_id", "step", "finished"],
    )
    joined = per_batch.merge(steps, on="batch_id")
    joined["seconds"] = (pd.to_datetime(joined["finished"], utc=True)
                         - pd.to_datetime(joined["ingested"], utc=True)).dt.total_seconds()
    out = {
        step: np.repeat(group["seconds"].to_numpy(), group["n"].to_numpy())
        for step, group in joined.groupby("step")
    }
    return dict(sorted(out.items(), key=lambda item: np.median(item[1])))


def percentile_table(lat: dict) -> pd.DataFrame:
    rows = {
        step: {"alerts": len(v), **{f"p{q}": np.percentile(v, q) for q in PERCENTILES}, "max": v.max()}
        for step, v in lat.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def report(lat: dict) -> str:
    table = percentile_table(lat)
    lines = ["Seconds from an alert's ingestion to the end of each step (per alert)",
             f"  {'step':<14}{'alerts':>9}" + "".join(f"{f'p{q}':>9}" for q in PERCENTILES) + f"{'max':>9}"]
    for step, row in table.iterrows():
        lines.append(f"  {step:<14}{int(row['alerts']):>9}" + "".join(f"{row[f'p{q}']:>9.2f}" for q in PERCENTILES)
                     + f"{row['max']:>9.2f}")
    return "\n".join(lines)


def plot_cdf(lat: dict, path, title="Processing time per alert"):
    """The cumulative distribution of seconds since ingestion, one curve per step (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for step, values in lat.items():
        x = np.sort(values)
        ax.step(np.maximum(x, 1e-3), np.arange(1, len(x) + 1) / len(x), where="post", label=step)
    ax.set_xscale("log")
    ax.set_xlabel("seconds since the alert was ingested")
    ax.set_ylabel("fraction of alerts done")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
