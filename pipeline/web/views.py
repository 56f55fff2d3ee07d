"""The web dashboard (server-rendered; small scripts, nothing fetched from the internet) and raw packets.

Pages: search, object, pipeline, classifier comparison, outliers; bulk downloads of a search result
(cutouts as one zip, the object table as CSV with chosen columns).
"""
import csv
import datetime
import functools
import io
import math
import zipfile
from collections import Counter, defaultdict

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Min, Sum
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from pipeline.api.queries import (
    ITEM_FIELDS, MAX_CONE_RADIUS_ARCSEC, MAX_PAGE_SIZE, BadParameter, object_queryset, ordered, parse_object_query,
    search_objects,
)
from pipeline.api.stamps import STAMP_TYPES, StampMissing, cutout_bytes, raw_alert
from pipeline.backends import archive
from pipeline.ingest.storage import ArchiveMissing
from pipeline.models import (
    AllWise, Detection, Feature, ForcedPhotometry, Gaia, MagStats, NonDetection, Object, ObjectFeatureState,
    OutlierScore, Probability, Ps1, Quarantine, RawAlert, SolarSystem, StepTiming, Xmatch, XmatchPending,
)

BAND_NAMES = {1: "g", 2: "r", 3: "i"}
LC_MIN_DETECTIONS = 6  # ALeRCE's light-curve classifier: at least 6 detections in g or in r
# the step names StepTiming and Quarantine record (pipeline/workflow/step_tasks.py)
STEP_ORDER = ("ingest", "stamp_classifier", "xmatch", "correct", "magstats", "features", "lc_classifier",
              "outliers", "publish")
LEVELS = (("lc_classifier_top", "Light curve, top level"), ("lc_classifier", "Light curve, bottom level"),
          ("lc_classifier_transient", "Light curve, transient branch"),
          ("lc_classifier_stochastic", "Light curve, stochastic branch"),
          ("lc_classifier_periodic", "Light curve, periodic branch"), ("stamp_classifier", "Stamp (first alert)"))
MAX_BULK_OBJECTS = 500
MAX_BULK_ALERTS = 2000
MAX_CSV_ROWS = 50000
LATENCY_ALERTS = 200000  # most recent alerts in the latency distributions
MAX_TIMING_HOURS = 10 * 366 * 24  # the timing pages look back at most ten years


@require_GET
def alert_avro(request, candid):
    """``GET /alerts/<candid>.avro[?survey=lsst]``: the packet's bytes exactly as they were received (ZTF's
    alert unless ``survey`` names another: a Rubin diaSourceId may equal a ZTF candid)."""
    try:
        raw = RawAlert.objects.get(candid=candid, survey=request.GET.get("survey", "ztf"))
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
    latest = Object.objects.order_by("-lastmjd", "oid")[:25]
    missing = (
        Feature.objects.exclude(missing_reason="").values("missing_reason").annotate(n=Count("id")).order_by("-n")
    )
    surveys = Object.objects.values("survey").annotate(n=Count("oid")).order_by("survey")
    context = {"counts": counts, "latest": latest, "missing": missing, "surveys": surveys}
    return render(request, "pipeline/index.html", context)


def _hours(request):
    """``?hours=`` of the timing pages: a number of hours in (0, MAX_TIMING_HOURS]; BadParameter otherwise."""
    raw = request.GET.get("hours", "24")
    try:
        hours = float(raw)
    except ValueError:
        raise BadParameter("hours", f"{raw[:40]!r} is not a number") from None
    if not (0 < hours <= MAX_TIMING_HOURS):
        raise BadParameter("hours", f"{raw[:40]!r} is not in (0, {MAX_TIMING_HOURS}]")
    return hours


def _recent_latencies(view):
    """``view(request, hours, timing, latencies)`` over the last ``?hours``; a bad value is a 400."""
    from datetime import timedelta

    @functools.wraps(view)
    def wrapped(request):
        from pipeline.workflow import timing

        try:
            hours = _hours(request)
        except BadParameter as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain")
        return view(request, hours, timing, timing.latencies(since=timezone.now() - timedelta(hours=hours)))

    return wrapped


@require_GET
@_recent_latencies
def processing_times(request, hours, timing, lat):
    """Per step, percentiles of "alert ingested -> step done" over the last hours (``?hours=24``)."""
    table = timing.percentile_table(lat).reset_index(names="step").to_dict("records") if lat else []
    return render(request, "pipeline/timing.html", {"rows": table, "hours": hours})


@require_GET
@_recent_latencies
def processing_times_png(request, hours, timing, lat):
    """The cumulative distribution of the same latencies, one curve per step."""
    if not lat:
        raise Http404("no step timings in that period")
    buffer = io.BytesIO()
    timing.plot_cdf(lat, buffer, title=f"Processing time per alert, last {hours:g} h")
    return HttpResponse(buffer.getvalue(), content_type="image/png")


# ---------------------------------------------------------------------------------------------- search

SEARCH_FIELDS = ("oid", "ra", "dec", "radius", "classifier", "class", "probability", "ndet", "firstmjd", "lastmjd",
                 "order_by", "order_mode", "page_size")
CSV_COLUMNS = ITEM_FIELDS


def _classifier_choices():
    rows = Probability.objects.values_list("classifier_name", "class_name").distinct().order_by(
        "classifier_name", "class_name")
    choices = defaultdict(list)
    for name, class_name in rows:
        choices[name].append(class_name)
    return dict(choices)


MJD_EPOCH = datetime.date(1858, 11, 17)


def date_or_mjd(text):
    """'2024-04-01' (UTC date) -> its MJD as text; anything else is returned unchanged (an MJD, or an error
    for the parser to report)."""
    try:
        return str(float((datetime.date.fromisoformat(text.strip()) - MJD_EPOCH).days))
    except ValueError:
        return text


def _search_params(request):
    """The request's search parameters, with the dashboard's defaults (newest objects first, count on)."""
    params = request.GET.copy()
    for key in list(params):
        if all(v == "" for v in params.getlist(key)):
            del params[key]
    if "class" in params and "classifier" not in params:
        params["classifier"] = "lc_classifier"
    if "order_by" not in params:
        params["order_by"], params["order_mode"] = "lastmjd", "DESC"
    params.setdefault("page_size", "50")
    params["count"] = "true"
    # the form has two boxes for each range; an empty minimum with a maximum means "up to"
    for name in ("ndet", "firstmjd", "lastmjd"):
        low, high = request.GET.get(f"{name}_min", ""), request.GET.get(f"{name}_max", "")
        if name != "ndet":
            low, high = (date_or_mjd(v) if v else v for v in (low, high))
        if low or high:
            params.setlist(name, [low or ("0" if name == "ndet" else "-1e9")] + ([high] if high else []))
    return params


@require_GET
def search(request):
    params = _search_params(request)
    error, page = None, None
    try:
        q = parse_object_query(params)
        page = search_objects(q)
    except BadParameter as exc:
        error = str(exc)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": request.GET, "page": page, "error": error, "classifiers": _classifier_choices(),
        "query": query.urlencode(), "api_query": params.urlencode(), "csv_columns": CSV_COLUMNS, "max_radius": MAX_CONE_RADIUS_ARCSEC,
        "max_page_size": MAX_PAGE_SIZE, "max_bulk_objects": MAX_BULK_OBJECTS, "max_bulk_alerts": MAX_BULK_ALERTS,
        "order_columns": ("lastmjd", "firstmjd", "ndet", "oid", "probability", "meanra", "meandec"),
        "pages": _page_links(page) if page else [],
    }
    return render(request, "pipeline/search.html", context, status=400 if error else 200)


def _page_links(page):
    last = math.ceil(page.total / page.page_size) if page.total else page.page
    numbers = sorted({1, last, *range(max(1, page.page - 2), min(last, page.page + 2) + 1)})
    return [{"number": n, "current": n == page.page} for n in numbers]


def _matching_oids(request, limit):
    params = _search_params(request)
    params["page_size"] = str(MAX_PAGE_SIZE)
    q = parse_object_query(params)
    qs = ordered(object_queryset(q), q)
    return list(qs.values_list("oid", flat=True)[:limit])


@require_GET
def download_cutouts(request):
    """The cutouts (gzipped FITS, as in the packets) of every stored alert of the search result, one zip."""
    try:
        oids = _matching_oids(request, MAX_BULK_OBJECTS)
    except BadParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    alerts = list(RawAlert.objects.filter(oid__in=oids).order_by("oid", "candid").values_list("candid", "oid")
                  [:MAX_BULK_ALERTS])
    buffer = io.BytesIO()
    manifest = ["oid,candid,type,file"]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for candid, oid in alerts:
            try:
                _, packet = raw_alert(candid, oid)
            except StampMissing:
                continue
            for stamp_type in STAMP_TYPES:
                try:
                    data = cutout_bytes(packet, stamp_type)
                except StampMissing:
                    continue
                name = f"{oid}/{candid}_{stamp_type}.fits.gz"
                zf.writestr(name, data)
                manifest.append(f"{oid},{candid},{stamp_type},{name}")
        zf.writestr("manifest.csv", "\n".join(manifest) + "\n")
    response = HttpResponse(buffer.getvalue(), content_type="application/zip")
    response["Content-Disposition"] = 'attachment; filename="cutouts.zip"'
    return response


class _Echo:
    def write(self, value):
        return value


@require_GET
def download_objects_csv(request):
    """The object table of the search result with the chosen columns (``columns=...``), as CSV."""
    columns = [c for c in request.GET.getlist("columns") if c] or ["oid", "meanra", "meandec", "ndet", "class",
                                                                    "probability"]
    unknown = [c for c in columns if c not in CSV_COLUMNS and c not in ("class", "classifier")]
    if unknown:
        return HttpResponseBadRequest(f"unknown columns: {', '.join(c[:40] for c in unknown)}",
                                      content_type="text/plain")
    try:
        params = _search_params(request)
        q = parse_object_query(params)
    except BadParameter as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain")
    fields = [{"class": "class_name", "classifier": "classifier_name"}.get(c, c) for c in columns]
    rows = ordered(object_queryset(q), q).values_list(*fields)[:MAX_CSV_ROWS]
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(columns)
        for row in rows.iterator(chunk_size=2000):
            yield writer.writerow(["" if v is None else v for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="objects.csv"'
    return response


# ---------------------------------------------------------------------------------------------- object page

def _feature_registry():
    try:
        from pipeline.steps.features import registry
    except Exception:  # the dashboard still shows stored features without units
        return {}, set()
    return registry.FEATURES, set(getattr(registry, "NOT_IN_ALERCE", ()))


def _features_table(oid):
    specs, not_in_alerce = _feature_registry()
    rows = []
    for f in Feature.objects.filter(oid=oid).order_by("name"):
        spec = specs.get(f.name)
        ours = (f.name in not_in_alerce or bool(getattr(spec, "ours", False)) or getattr(spec, "alerce", True) is False
                or getattr(spec, "origin", "") == "ours")
        rows.append({
            "name": f.name, "band": BAND_NAMES.get(f.fid, ""), "value": f.value, "missing_reason": f.missing_reason,
            "unit": getattr(spec, "unit", ""), "meaning": getattr(spec, "meaning", ""),
            "group": getattr(spec, "group", ""), "ours": ours, "version": f.version,
        })
    order = {name: i for i, name in enumerate(specs)}
    rows.sort(key=lambda r: (order.get(r["name"], len(order)), r["name"]))
    return rows


def _probability_levels(oid):
    probs = defaultdict(list)
    for p in Probability.objects.filter(oid=oid).order_by("classifier_name", "classifier_version", "ranking"):
        probs[p.classifier_name].append(p)
    levels = []
    known = {name for name, _ in LEVELS}
    for name, label in LEVELS + tuple((n, n) for n in sorted(probs) if n not in known):
        if name in probs:
            versions = sorted({p.classifier_version for p in probs[name]})
            latest = [p for p in probs[name] if p.classifier_version == versions[-1]]
            levels.append({"name": name, "label": label, "version": versions[-1], "rows": latest})
    return levels


def _status(obj, detections, levels, quarantine):
    """What has been computed for the object, and why not where it has not."""
    by_band = Counter(d.fid for d in detections)
    failed = defaultdict(list)
    for q in quarantine:
        failed[q.step].append(q)
    names = {level["name"] for level in levels}
    status = []

    def add(step, done, text):
        if not done and failed.get(step) and not text.startswith("step failed"):
            text = f"step failed: {failed[step][0].reason}"
        status.append({"step": step, "done": done, "text": text})

    corrected = [d for d in detections if d.corrected is not None]
    add("correct", bool(corrected), f"{sum(1 for d in detections if d.magpsf_corr is not None)} of "
        f"{len(detections)} detections have corrected magnitudes" if corrected else "not yet corrected")
    add("magstats", MagStats.objects.filter(oid=obj.oid).exists(), "per-band statistics" if
        MagStats.objects.filter(oid=obj.oid).exists() else "not yet computed")
    state = ObjectFeatureState.objects.filter(oid=obj.oid).first()
    add("features", state is not None,
        f"from the {state.lc_used} light curve of {state.ndet} detections ({state.version})" if state
        else "not yet computed")
    pending = XmatchPending.objects.filter(oid=obj.oid).first()
    if pending:
        add("xmatch", False, f"waiting for a retry ({pending.attempts} attempts): {pending.last_error}")
    else:
        add("xmatch", True, "cross-matched" if Xmatch.objects.filter(oid=obj.oid).exists()
            else "no AllWISE source within the match radius")
    for step, label in (("lc_classifier", "light-curve classifier"), ("stamp_classifier", "stamp classifier")):
        if step in names:
            add(step, True, f"classified by the {label}")
        elif failed.get(step):
            add(step, False, f"step failed: {failed[step][0].reason}")
        elif step == "lc_classifier" and max(by_band.get(1, 0), by_band.get(2, 0)) < LC_MIN_DETECTIONS:
            add(step, False, f"too few detections for the {label}: it needs at least {LC_MIN_DETECTIONS} in g or "
                f"in r; this object has {by_band.get(1, 0)} in g and {by_band.get(2, 0)} in r")
        elif step == "stamp_classifier" and not any(d.has_stamp for d in detections):
            add(step, False, "no stored alert of this object carries cutouts")
        else:
            add(step, False, f"not yet classified by the {label}")
    outlier = OutlierScore.objects.filter(oid=obj.oid).order_by("-version").first()
    if outlier is None:
        reason = ("step failed: " + failed["outliers"][0].reason) if failed.get("outliers") else (
            "needs the light-curve classifier first" if "lc_classifier" not in names else "not yet scored")
        add("outliers", False, reason)
    else:
        add("outliers", True, f"score {outlier.score:.3g} within the {outlier.branch} branch")
    for step, rows in failed.items():
        if step not in {s["step"] for s in status}:
            add(step, False, f"step failed: {rows[0].reason}")
    return status


def _lightcurve_data(obj, detections, non_detections, period):
    return {
        "oid": obj.oid,
        "period": period,
        "detections": [
            {"candid": str(d.candid), "mjd": d.mjd, "fid": d.fid, "mag": d.magpsf, "err": d.sigmapsf,
             "mag_corr": d.magpsf_corr, "err_corr": d.sigmapsf_corr, "dubious": bool(d.dubious),
             "isdiffpos": d.isdiffpos, "has_stamp": d.has_stamp}
            for d in detections
        ],
        "non_detections": [{"mjd": n.mjd, "fid": n.fid, "mag": n.diffmaglim} for n in non_detections],
    }


@require_GET
def object_page(request, oid):
    try:
        obj = Object.objects.get(oid=oid)
    except Object.DoesNotExist:
        raise Http404(f"no object {oid}")
    detections = list(Detection.objects.filter(oid=oid).order_by("mjd", "candid"))
    non_detections = list(NonDetection.objects.filter(oid=oid).order_by("mjd"))
    levels = _probability_levels(oid)
    quarantine = list(Quarantine.objects.filter(oid=oid).order_by("-created"))
    period_row = Feature.objects.filter(oid=oid, name="Multiband_period").order_by("-version").first()
    period = period_row.value if period_row and period_row.value and period_row.value > 0 else None
    period_missing = period_row.missing_reason if period_row and period is None else ""
    if period is not None:  # folding at a period longer than the light curve shows no cycle
        mjds = [d.mjd for d in detections]
        baseline = max(mjds) - min(mjds) if mjds else 0.0
        if period > baseline:
            period_missing = f"the period, {period:.5g} d, is longer than the light curve's {baseline:.5g} d"
            period = None
    alerts = list(RawAlert.objects.filter(oid=oid).order_by("-candid"))
    stamped = [d.candid for d in sorted(detections, key=lambda d: -d.mjd) if d.has_stamp]
    stored = {a.candid for a in alerts}
    stamp_candids = [c for c in stamped if c in stored]
    xmatches = []
    for x in Xmatch.objects.filter(oid=oid):
        source = AllWise.objects.filter(catid=x.catid).first() if x.catalog.lower() == "allwise" else None
        xmatches.append({"match": x, "source": source})
    context = {
        "obj": obj,
        "lc": _lightcurve_data(obj, detections, non_detections, period),
        "period": period,
        "period_missing": period_missing,
        "n_detections": len(detections), "n_non_detections": len(non_detections),
        "n_dubious": sum(1 for d in detections if d.dubious),
        "n_forced": ForcedPhotometry.objects.filter(oid=oid).count(),
        "levels": levels,
        "status": _status(obj, detections, levels, quarantine),
        "quarantine": quarantine,
        "features": _features_table(oid),
        "magstats": MagStats.objects.filter(oid=oid).order_by("fid"),
        "xmatches": xmatches,
        "ps1": Ps1.objects.filter(oid=oid).first(),
        "gaia": Gaia.objects.filter(oid=oid).first(),
        "ss": SolarSystem.objects.filter(oid=oid).first(),
        "outliers": OutlierScore.objects.filter(oid=oid).order_by("-version"),
        "alerts": alerts,
        "stamp_candids": stamp_candids,
        "stamp_types": STAMP_TYPES,
        "bands": BAND_NAMES,
    }
    return render(request, "pipeline/object.html", context)


# ---------------------------------------------------------------------------------------------- pipeline page

def _queue_lengths():
    """Messages waiting per Celery queue (Redis broker); None with the reason otherwise."""
    url = settings.CELERY_BROKER_URL
    queues = [q.name for q in settings.CELERY_TASK_QUEUES]
    if not url:
        return None, "no broker configured: the canvas runs eagerly in-process, so nothing queues"
    if not url.startswith(("redis://", "rediss://")):
        return None, "queue lengths are read from Redis brokers only"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return [(name, client.llen(name)) for name in queues], ""
    except Exception as exc:
        return None, f"broker unreachable: {exc}"


def _step_key(step):
    return (STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER), step)


def latency_cdfs(limit=LATENCY_ALERTS):
    """Per step: sorted seconds from each alert's ingestion to the end of that step on its batch."""
    alerts = list(RawAlert.objects.order_by("-ingested").values_list("batch_id", "ingested")[:limit])
    if not alerts:
        return {}
    batches = {b for b, _ in alerts}
    finished = defaultdict(dict)
    for batch, step, done in StepTiming.objects.filter(batch_id__in=batches).values_list(
            "batch_id", "step", "finished"):
        finished[step][batch] = done
    cdfs = {}
    for step, done in finished.items():
        seconds = [(done[b] - t).total_seconds() for b, t in alerts if b in done]
        if seconds:
            cdfs[step] = np.sort(np.maximum(np.array(seconds), 0.0))
    return dict(sorted(cdfs.items(), key=lambda item: _step_key(item[0])))


#: Ticks of the log time axis at round durations, labelled in the unit that makes them whole numbers.
TIME_TICKS = ((0.01, "0.01 s"), (0.1, "0.1 s"), (1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"),
              (3600, "1 h"), (36000, "10 h"), (86400, "1 d"), (864000, "10 d"), (8640000, "100 d"))
COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4")


def cdf_svg(cdfs, width=640, height=300):
    """Polylines of the cumulative distributions on a log time axis, for an inline SVG."""
    if not cdfs:
        return None
    values = np.concatenate(list(cdfs.values()))
    lo = max(float(values[values > 0].min()) if (values > 0).any() else 0.01, 0.01)
    hi = max(float(values.max()), lo * 10)
    lo_log, hi_log = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    pad_l, pad_b, pad_t, pad_r = 48, 36, 10, 10
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(sec):
        return pad_l + w * (math.log10(max(sec, 10 ** lo_log)) - lo_log) / max(hi_log - lo_log, 1)

    def y(frac):
        return pad_t + h * (1 - frac)

    lines = []
    for i, (step, secs) in enumerate(cdfs.items()):
        n = len(secs)
        take = np.unique(np.linspace(0, n - 1, min(n, 400)).astype(int))
        pts = " ".join(f"{x(secs[j]):.1f},{y((j + 1) / n):.1f}" for j in take)
        pts = f"{x(secs[0]):.1f},{y(0):.1f} " + pts
        lines.append({"step": step, "points": pts, "colour": COLOURS[i % len(COLOURS)], "n": n,
                      "median": float(np.median(secs)), "p95": float(np.percentile(secs, 95))})
    xticks = [{"x": x(sec), "label": label} for sec, label in TIME_TICKS if 10 ** lo_log <= sec <= 10 ** hi_log]
    yticks = [{"y": y(f), "label": f"{int(f * 100)}%"} for f in (0, 0.25, 0.5, 0.75, 1.0)]
    return {"width": width, "height": height, "lines": lines, "xticks": xticks, "yticks": yticks,
            "x0": pad_l, "x1": pad_l + w, "y0": pad_t, "y1": pad_t + h}


def step_outputs():
    """Objects each step has produced something for."""
    return {
        "ingest": Object.objects.count(),
        "xmatch": Xmatch.objects.values("oid").distinct().count(),
        "correct": Detection.objects.filter(corrected__isnull=False).values("oid").distinct().count(),
        "magstats": MagStats.objects.values("oid").distinct().count(),
        "features": ObjectFeatureState.objects.count(),
        "lc_classifier": Probability.objects.filter(classifier_name="lc_classifier").values("oid").distinct().count(),
        "stamp_classifier": Probability.objects.filter(classifier_name="stamp_classifier").values("oid")
        .distinct().count(),
        "outliers": OutlierScore.objects.values("oid").distinct().count(),
    }


@require_GET
def pipeline_page(request):
    steps = {row["step"]: row for row in StepTiming.objects.values("step").annotate(
        batches=Count("id"), items=Sum("n"), first=Min("started"), last=Max("finished"))}
    outputs = step_outputs()
    quarantine_by_step = {row["step"]: row["n"] for row in Quarantine.objects.values("step").annotate(n=Count("id"))}
    rows = []
    for step in sorted(set(steps) | set(quarantine_by_step) | {"ingest"}, key=_step_key):
        timing = steps.get(step, {})
        rows.append({"step": step, "batches": timing.get("batches", 0), "items": timing.get("items") or 0,
                     "objects": outputs.get(step), "quarantined": quarantine_by_step.get(step, 0),
                     "last": timing.get("last")})
    reasons = (Quarantine.objects.values("step", "reason").annotate(n=Count("id"), last=Max("created"))
               .order_by("-n", "step")[:50])
    queues, queue_note = _queue_lengths()
    cdfs = latency_cdfs()
    context = {
        "alerts": RawAlert.objects.count(), "objects": Object.objects.count(), "rows": rows,
        "reasons": reasons, "queues": queues, "queue_note": queue_note, "cdf": cdf_svg(cdfs),
        "xmatch_pending": XmatchPending.objects.count(),
        "xmatch_errors": XmatchPending.objects.values("last_error").annotate(n=Count("oid")).order_by("-n")[:10],
        "latency_alerts": LATENCY_ALERTS, "now": timezone.now(),
    }
    return render(request, "pipeline/pipeline.html", context)


# ---------------------------------------------------------------------------------------------- classifiers

def comparison_matrix(lc_name="lc_classifier", stamp_name="stamp_classifier"):
    """For each top light-curve class, the share of those objects per top stamp class (rows sum to 1)."""
    lc = dict(Probability.objects.filter(classifier_name=lc_name, ranking=1).values_list("oid", "class_name"))
    stamp = dict(Probability.objects.filter(classifier_name=stamp_name, ranking=1, oid__in=list(lc))
                 .values_list("oid", "class_name"))
    counts = Counter((lc[oid], stamp[oid]) for oid in stamp)
    rows_names = sorted({a for a, _ in counts})
    cols = sorted({b for _, b in counts})
    rows = []
    for a in rows_names:
        total = sum(counts[(a, b)] for b in cols)
        cells = [{"n": counts[(a, b)], "frac": counts[(a, b)] / total if total else 0.0} for b in cols]
        rows.append({"name": a, "total": total, "cells": cells})
    return {"columns": cols, "rows": rows, "n": sum(counts.values()), "lc_only": len(lc) - len(stamp)}


@require_GET
def classifiers_page(request):
    lc_names = [n for n in Probability.objects.values_list("classifier_name", flat=True).distinct()
                if n.startswith("lc_classifier")]
    lc_name = request.GET.get("lc", "")
    if lc_name and lc_name not in lc_names:
        return HttpResponseBadRequest(f"lc: {lc_name[:40]!r} is not one of {', '.join(sorted(lc_names)) or 'none'}",
                                      content_type="text/plain")
    if not lc_name:
        lc_name = "lc_classifier" if "lc_classifier" in lc_names or not lc_names else sorted(lc_names)[0]
    context = {"matrix": comparison_matrix(lc_name), "lc_name": lc_name, "lc_names": sorted(lc_names)}
    return render(request, "pipeline/classifiers.html", context)


@require_GET
def outliers_page(request):
    show_all = request.GET.get("all", "0")
    if show_all not in ("0", "1", ""):
        return HttpResponseBadRequest(f"all: {show_all[:40]!r} is not 0 or 1", content_type="text/plain")
    show_all = show_all == "1"
    per_branch = 50
    version = max(OutlierScore.objects.values_list("version", flat=True).distinct(), default=None)
    scores = OutlierScore.objects.filter(version=version)  # the newest outlier model only
    if not show_all:
        scores = scores.filter(is_outlier=True)
    branches = []
    for branch in sorted(set(scores.values_list("branch", flat=True))):
        in_branch = scores.filter(branch=branch)
        branches.append({
            "name": branch, "n": in_branch.count(),
            "rows": in_branch.select_related("oid").order_by("-score", "oid_id")[:per_branch],
        })
    context = {"branches": branches, "show_all": show_all, "per_branch": per_branch, "version": version,
               "scored": OutlierScore.objects.filter(version=version).count()}
    return render(request, "pipeline/outliers.html", context)
