"""Web views: the alert Avro API (raw packets as stored) and a small status page."""
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .backends import archive
from .models import Detection, Feature, NonDetection, Object, Quarantine, RawAlert, StepTiming
from .storage import ArchiveMissing


@require_GET
def alert_avro(request, candid):
    """``GET /alerts/<candid>.avro``: the packet's bytes exactly as they were received."""
    try:
        raw = RawAlert.objects.get(candid=candid)
        data = archive().load(raw.archive_key)
    except (RawAlert.DoesNotExist, ArchiveMissing):
        raise Http404(f"no stored alert with candid {candid}")
    response = HttpResponse(data, content_type="avro/binary")
    response["Content-Disposition"] = f'attachment; filename="{candid}.avro"'
    return response


@require_GET
def index(request):
    counts = {
        "objects": Object.objects.count(),
        "detections": Detection.objects.count(),
        "non_detections": NonDetection.objects.count(),
        "alerts": RawAlert.objects.count(),
        "quarantined": Quarantine.objects.count(),
    }
    steps = StepTiming.objects.values("step").annotate(batches=Count("id")).order_by("step")
    latest = Object.objects.order_by("-lastmjd", "oid")[:50]
    missing = (
        Feature.objects.exclude(missing_reason="").values("missing_reason").annotate(n=Count("id")).order_by("-n")
    )
    context = {"counts": counts, "steps": steps, "latest": latest, "missing": missing}
    return render(request, "pipeline/index.html", context)


def _recent_latencies(request):
    from datetime import timedelta

    from django.utils import timezone

    from . import timing

    hours = float(request.GET.get("hours", 24))
    return timing, timing.latencies(since=timezone.now() - timedelta(hours=hours)), hours


@require_GET
def processing_times(request):
    """Per step, percentiles of "alert ingested -> step done" over the last hours (``?hours=24``)."""
    timing, lat, hours = _recent_latencies(request)
    table = timing.percentile_table(lat).reset_index(names="step").to_dict("records") if lat else []
    return render(request, "pipeline/timing.html", {"rows": table, "hours": hours})


@require_GET
def processing_times_png(request):
    """The cumulative distribution of the same latencies, one curve per step."""
    timing, lat, hours = _recent_latencies(request)
    if not lat:
        raise Http404("no step timings in that period")
    buffer = __import__("io").BytesIO()
    timing.plot_cdf(lat, buffer, title=f"Processing time per alert, last {hours:g} h")
    return HttpResponse(buffer.getvalue(), content_type="image/png")
