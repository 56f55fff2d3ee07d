"""The multisurvey routes of ALeRCE's API, so the public ``alerce`` client (2.3.x) reads our Rubin objects.

The client's ``default_config.json`` names them under ``multisurvey.ROUTES_MS`` (relative to ``URL_MS``);
point ``URL_MS`` at ``<this site>/multisurvey/`` (``ALERCE_CONFIG_PATH``) and ``Alerce().query_object(oid,
survey="lsst")``, ``query_objects``, ``query_detections``, ``query_non_detections``,
``query_forced_photometry``, ``query_lightcurve`` and ``query_probabilities`` work. Every request names
the survey (``survey`` or ``survey_id``); light-curve rows carry ``band`` (our fid) and ``band_map``
(fid -> band name), which the client turns into ``band_name``.
"""
import gzip
import math
import struct
import zlib

from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from pipeline.models import Detection, ForcedPhotometry, NonDetection, Object, Probability
from pipeline.surveys.lsst import FID_BAND, ZERO_POINT_NJY, flux_to_mag

BAND_MAPS = {"ztf": {"1": "g", "2": "r", "3": "i"}, "lsst": {str(fid): band for fid, band in FID_BAND.items()}}
OBJECT_FIELDS = ["oid", "survey", "meanra", "meandec", "sigmara", "sigmadec", "firstmjd", "lastmjd", "deltamjd",
                 "ndet", "simulated", "corrected", "stellar"]
ORDERABLE = {"oid", "meanra", "meandec", "firstmjd", "lastmjd", "deltamjd", "n_det", "probability"}


class BadRequest(Exception):
    pass


def _error(status, message):
    return JsonResponse({"detail": message}, status=status)


def _survey(request):
    survey = request.GET.get("survey_id") or request.GET.get("survey")
    if survey not in BAND_MAPS:
        raise BadRequest(f"survey must be one of {sorted(BAND_MAPS)}")
    return survey


def _object_or_404(request):
    survey, oid = _survey(request), request.GET.get("oid")
    if not oid:
        raise BadRequest("oid is required")
    try:
        return Object.objects.get(oid=str(oid), survey=survey)
    except Object.DoesNotExist:
        return None


def _api(view):
    @require_GET
    def wrapped(request):
        try:
            return view(request)
        except BadRequest as exc:
            return _error(400, str(exc))

    wrapped.__name__ = view.__name__
    return wrapped


def _object_row(obj):
    row = {name: getattr(obj, name) for name in OBJECT_FIELDS}
    row["n_det"] = row.pop("ndet")
    return row


def _range(request, name):
    values = [float(v) for v in request.GET.getlist(name) if v != ""]
    if len(values) > 2:
        raise BadRequest(f"{name}: one value (minimum) or two (minimum, maximum)")
    return values


@_api
def list_objects(request):
    survey = _survey(request)
    objects = Object.objects.filter(survey=survey)
    if request.GET.get("oid"):
        objects = objects.filter(oid__in=request.GET.getlist("oid"))
    for name, column in (("firstmjd", "firstmjd"), ("lastmjd", "lastmjd"), ("n_det", "ndet")):
        bounds = _range(request, name)
        if bounds:
            objects = objects.filter(**{f"{column}__gte": bounds[0]})
        if len(bounds) == 2:
            objects = objects.filter(**{f"{column}__lte": bounds[1]})
    if request.GET.get("ra") and request.GET.get("dec"):
        ra, dec = float(request.GET["ra"]), float(request.GET["dec"])
        radius = float(request.GET.get("radius", 30)) / 3600.0  # arcsec, as ALeRCE's API
        objects = objects.filter(meandec__gte=dec - radius, meandec__lte=dec + radius)
        near = [o for o in objects if _separation(ra, dec, o.meanra, o.meandec) <= radius]
        objects = Object.objects.filter(oid__in=[o.oid for o in near])
    probabilities = None
    classifier, class_name = request.GET.get("classifier"), request.GET.get("class_name")
    if classifier or class_name:
        probabilities = Probability.objects.filter(oid__in=objects)
        if classifier:
            probabilities = probabilities.filter(classifier_name=classifier)
        if class_name:
            probabilities = probabilities.filter(class_name=class_name)
        if request.GET.get("ranking"):
            probabilities = probabilities.filter(ranking=int(request.GET["ranking"]))
        elif not class_name:
            probabilities = probabilities.filter(ranking=1)
        if request.GET.get("probability"):
            probabilities = probabilities.filter(probability__gte=float(request.GET["probability"]))
        objects = objects.filter(oid__in=probabilities.values("oid"))
    rows = [_object_row(o) for o in objects]
    if probabilities is not None:
        best = {}
        for p in probabilities.order_by("oid", "-probability"):
            best.setdefault(p.oid_id, p)
        for row in rows:
            p = best[row["oid"]]
            row.update(classifier_name=p.classifier_name, classifier_version=p.classifier_version,
                       class_name=p.class_name, probability=p.probability, ranking=p.ranking)
    order_by = request.GET.get("order_by") or "oid"
    if order_by not in ORDERABLE:
        raise BadRequest(f"order_by must be one of {sorted(ORDERABLE)}")
    reverse = (request.GET.get("order_mode") or "ASC").upper() == "DESC"
    rows.sort(key=lambda r: (r.get(order_by) is None, r.get(order_by) or 0) if order_by != "oid" else r["oid"],
              reverse=reverse)
    page, size = int(request.GET.get("page", 1)), min(int(request.GET.get("page_size", 10)), 1000)
    items = rows[(page - 1) * size: page * size]
    body = {"page": page, "page_size": size, "items": items}
    if request.GET.get("count", "").lower() == "true":
        body["total"] = len(rows)
    return JsonResponse(body)


def _separation(ra1, dec1, ra2, dec2):
    """Great-circle distance in degrees (haversine)."""
    ra1, dec1, ra2, dec2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


@_api
def single_object(request):
    obj = _object_or_404(request)
    if obj is None:
        return _error(404, "object not found")
    return JsonResponse(_object_row(obj))


def _band(row, survey):
    return {"band": row["fid"], "band_map": BAND_MAPS[survey]}


def _detections(obj):
    out = []
    for d in Detection.objects.filter(oid=obj).order_by("mjd").values():
        out.append({
            "oid": obj.oid, "survey": d["survey"], "measurement_id": d["candid"], "candid": d["candid"],
            "mjd": d["mjd"], "ra": d["ra"], "dec": d["dec"], **_band(d, obj.survey),
            "mag": d["magpsf"], "e_mag": d["sigmapsf"], "mag_corr": d["magpsf_corr"], "e_mag_corr": d["sigmapsf_corr"],
            "isdiffpos": d["isdiffpos"], "psfFlux": d["psf_flux"], "psfFluxErr": d["psf_flux_err"],
            "scienceFlux": d["science_flux"], "scienceFluxErr": d["science_flux_err"],
            "reliability" if obj.survey == "lsst" else "rb": d["rb"], "has_stamp": d["has_stamp"],
            "parent_candid": d["parent_candid"],
        })
    return out


def _non_detections(obj):
    return [{"oid": obj.oid, "mjd": n["mjd"], "diffmaglim": n["diffmaglim"], **_band(n, obj.survey)}
            for n in NonDetection.objects.filter(oid=obj).order_by("mjd").values("mjd", "fid", "diffmaglim")]


def _forced_photometry(obj):
    out = []
    for f in ForcedPhotometry.objects.filter(oid=obj).order_by("mjd").values():
        row = {"oid": obj.oid, "mjd": f["mjd"], "visit" if obj.survey == "lsst" else "pid": f["pid"],
               **_band(f, obj.survey)}
        if obj.survey == "lsst":
            mag, err = flux_to_mag(f["forcediffimflux"], f["forcediffimfluxunc"])
            row.update(psfFlux=f["forcediffimflux"], psfFluxErr=f["forcediffimfluxunc"], mag=mag, e_mag=err,
                       zero_point=ZERO_POINT_NJY)
        else:
            row.update({k: f[k] for k in ("forcediffimflux", "forcediffimfluxunc", "magzpsci", "diffmaglim",
                                          "procstatus")})
        out.append(row)
    return out


def _light_curve_view(build):
    @_api
    def view(request):
        obj = _object_or_404(request)
        if obj is None:
            return _error(404, "object not found")
        return JsonResponse(build(obj), safe=False)

    view.__name__ = build.__name__.lstrip("_")
    return view


detections = _light_curve_view(_detections)
non_detections = _light_curve_view(_non_detections)
forced_photometry = _light_curve_view(_forced_photometry)
lightcurve = _light_curve_view(lambda obj: {"detections": _detections(obj), "non_detections": _non_detections(obj),
                                            "forced_photometry": _forced_photometry(obj)})


@_api
def probabilities(request):
    obj = _object_or_404(request)
    if obj is None:
        return _error(404, "object not found")
    rows = Probability.objects.filter(oid=obj).filter(~Q(classifier_name="")).order_by(
        "classifier_name", "classifier_version", "ranking")
    return JsonResponse([{"oid": obj.oid, "classifier_name": p.classifier_name,
                          "classifier_version": p.classifier_version, "class_name": p.class_name,
                          "probability": p.probability, "ranking": p.ranking} for p in rows], safe=False)


STAMP_TYPES = {"cutoutScience": "science", "cutoutTemplate": "template", "cutoutDifference": "difference"}


def _stored_alert(request):
    """(RawAlert, raw bytes) of ``measurement_id`` (the alert's candid) of the request's object, else of its
    survey, else Rubin's (a Rubin diaSourceId may equal a ZTF candid), or None."""
    from pipeline.backends import archive
    from pipeline.ingest.storage import ArchiveMissing
    from pipeline.models import RawAlert

    try:
        alerts = RawAlert.objects.filter(candid=int(request.GET.get("measurement_id") or request.GET.get("candid")))
        if request.GET.get("oid"):
            alerts = alerts.filter(oid=request.GET["oid"])
        else:
            alerts = alerts.filter(survey=request.GET.get("survey_id") or request.GET.get("survey") or "lsst")
        raw = alerts.get()
        return raw, archive().load(raw.archive_key)
    except (TypeError, ValueError):
        raise BadRequest("measurement_id (an integer) is required") from None
    except (RawAlert.DoesNotExist, ArchiveMissing):
        return None


@_api
def get_avro(request):
    """The alert packet exactly as received."""
    found = _stored_alert(request)
    if found is None:
        return _error(404, "no stored alert with that measurement_id")
    response = HttpResponse(found[1], content_type="avro/binary")
    response["Content-Disposition"] = f'attachment; filename="{found[0].candid}.avro"'
    return response


@_api
def stamp(request):
    """One cutout of a stored alert: gzipped FITS (``file_format=fits``, what the client reads) or PNG."""
    from django.conf import settings

    from pipeline.surveys.dispatch import decode_packet, parse_record

    kind = STAMP_TYPES.get(request.GET.get("stamp_type", ""))
    if kind is None:
        raise BadRequest(f"stamp_type must be one of {sorted(STAMP_TYPES)}")
    found = _stored_alert(request)
    if found is None:
        return _error(404, "no stored alert with that measurement_id")
    records, version = decode_packet(found[1], settings.LSST_SCHEMAS)
    alert = next((a for a in (parse_record(r, version) for r in records) if a.candid == found[0].candid), None)
    data = alert and alert.cutouts.get(kind)
    if not data:
        return _error(404, f"the alert carries no {request.GET['stamp_type']}")
    if request.GET.get("file_format", "fits") == "png":
        from pipeline.surveys.cutouts import BadCutout, cutout_image

        try:
            image = cutout_image(data)
        except BadCutout as exc:
            return _error(422, f"the {request.GET['stamp_type']} of alert {found[0].candid} cannot be shown: {exc}")
        return HttpResponse(_png(image), content_type="image/png")
    data = bytes(data)
    return HttpResponse(data if data[:2] == b"\x1f\x8b" else gzip.compress(data), content_type="application/fits")


def _png(image):
    """An 8-bit greyscale PNG of ``image`` (1st-99th percentile stretch; NaN black)."""
    import numpy as np

    finite = np.isfinite(image)
    lo, hi = np.percentile(image[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    scaled = np.clip((np.where(finite, image, lo) - lo) / ((hi - lo) or 1.0), 0, 1)
    pixels = (scaled[::-1] * 255).astype(np.uint8)  # FITS rows go up, PNG rows down
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# Mounted at multisurvey/ (broker_site/urls.py); paths as in alerce's default_config.json ROUTES_MS
# (URL_MS = <site>/multisurvey/) and its stamps AVRO_ROUTES (STAMP_URL = <site>/multisurvey/stamps_api).
urlpatterns = [
    path("object_api/list_objects", list_objects, name="ms-objects"),
    path("object_api/object", single_object, name="ms-object"),
    path("lightcurve_api/detections", detections, name="ms-detections"),
    path("lightcurve_api/non_detections", non_detections, name="ms-non-detections"),
    path("lightcurve_api/forced-photometry", forced_photometry, name="ms-forced-photometry"),
    path("lightcurve_api/lightcurve", lightcurve, name="ms-lightcurve"),
    path("probability_api/probability", probabilities, name="ms-probabilities"),
    path("stamps_api/stamp", stamp, name="ms-stamp"),
    path("stamps_api/get_avro", get_avro, name="ms-get-avro"),
]
