"""ALeRCE's ZTF API v1 routes over our tables, so the public ``alerce`` client works unchanged.

Read-only and open: every route answers GET; any other method needs an authenticated staff user
(and then gets 405, as nothing here writes). Errors are JSON: ``{"detail": ..., "errors": {...}}``.
"""
from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from pipeline.api import serializers as s
from pipeline.api.client import client_config
from pipeline.api.permissions import ReadOnlyOrStaff
from pipeline.api.queries import (
    DEFAULT_CONE_RADIUS_ARCSEC, DEFAULT_PAGE_SIZE, MAX_CONE_RADIUS_ARCSEC, MAX_OIDS, MAX_PAGE_SIZE, ORDER_COLUMNS,
    BadParameter, parse_object_query, search_objects,
)
from pipeline.api.stamps import STAMP_TYPES, STRETCHES, StampMissing, cutout_bytes, raw_alert, stamp_png
from pipeline.models import Detection, Feature, ForcedPhotometry, MagStats, NonDetection, Object, Probability
from pipeline.surveys.cutouts import BadCutout


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "bad parameter"

    def __init__(self, param, message):
        super().__init__(f"bad parameter {param}: {message}")
        self.errors = {param: message}


#: The API docs pages load only from this server: ReDoc's bundle would fetch its logo from its CDN and
#: Swagger UI a validator badge; the browser refuses both (scripts inline and workers from blob: are ReDoc's).
SAME_ORIGIN_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
                   "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def same_origin_only(view):
    """``view`` with a Content-Security-Policy that lets the page load nothing from another host."""
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = SAME_ORIGIN_CSP
        return response
    return wrapped


class UnusableCutout(exceptions.APIException):
    """A stored cutout that is unreadable or too large to decode (``pipeline.surveys.cutouts``)."""
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "the cutout cannot be decoded"


def json_exception_handler(exc, context):
    if isinstance(exc, BadParameter):
        exc = BadRequest(exc.param, exc.message)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, BadRequest):
        response.data["errors"] = exc.errors
    return response


def not_found_json(request, *args, **kwargs):
    """Unknown routes under the API answer JSON, not the HTML 404 page."""
    return JsonResponse({"detail": f"no API route {request.path}"}, status=404)


ERRORS = {400: s.ErrorSerializer, 404: s.ErrorSerializer}


def get_object_or_404(oid):
    try:
        return Object.objects.get(oid=oid)
    except Object.DoesNotExist:
        raise exceptions.NotFound(f"object {oid} not found")


class BaseView(APIView):
    permission_classes = [ReadOnlyOrStaff]


OBJECT_PARAMS = [
    OpenApiParameter("classifier", str, description="Classifier name, e.g. lc_classifier, stamp_classifier"),
    OpenApiParameter("classifier_version", str),
    OpenApiParameter("class", str, description="Class name (with classifier: its class; ranking 1 unless set)"),
    OpenApiParameter("ranking", int, description="Class ranking (1 = most probable)"),
    OpenApiParameter("probability", float, description="Minimum probability of the class"),
    OpenApiParameter("ndet", int, many=True, description="Detections: minimum, or minimum and maximum"),
    OpenApiParameter("firstmjd", float, many=True, description="First detection MJD: minimum[, maximum]"),
    OpenApiParameter("lastmjd", float, many=True, description="Last detection MJD: minimum[, maximum]"),
    OpenApiParameter("ra", float, description="Cone centre right ascension, deg"),
    OpenApiParameter("dec", float, description="Cone centre declination, deg"),
    OpenApiParameter("radius", float, description=f"Cone radius, arcsec (default {DEFAULT_CONE_RADIUS_ARCSEC:g}, "
                                                  f"at most {MAX_CONE_RADIUS_ARCSEC:g})"),
    OpenApiParameter("oid", str, many=True, description=f"Object ids (at most {MAX_OIDS}); one id may hold * "
                                                        "wildcards"),
    OpenApiParameter("page", int, description="Page number, from 1"),
    OpenApiParameter("page_size", int, description=f"Objects per page (default {DEFAULT_PAGE_SIZE}, "
                                                   f"at most {MAX_PAGE_SIZE})"),
    OpenApiParameter("count", bool, description="Also count all matching objects (total)"),
    OpenApiParameter("order_by", str, enum=sorted(ORDER_COLUMNS)),
    OpenApiParameter("order_mode", str, enum=["ASC", "DESC"]),
]


class ObjectList(BaseView):
    @extend_schema(parameters=OBJECT_PARAMS, responses={200: s.ObjectPageSerializer, **ERRORS},
                   operation_id="ztf_v1_objects_list", summary="Objects matching filters (paginated)")
    def get(self, request):
        return Response(search_objects(parse_object_query(request.query_params)).as_alerce())


class ObjectDetail(BaseView):
    @extend_schema(responses={200: s.ObjectSerializer, **ERRORS}, summary="One object")
    def get(self, request, oid):
        return Response(s.ObjectSerializer(get_object_or_404(oid)).data)


def detections_of(oid):
    return Detection.objects.filter(oid=oid).order_by("mjd", "candid")


def non_detections_of(oid):
    return NonDetection.objects.filter(oid=oid).order_by("mjd", "fid")


class Detections(BaseView):
    @extend_schema(responses={200: s.DetectionSerializer(many=True), **ERRORS}, summary="Detections of an object")
    def get(self, request, oid):
        get_object_or_404(oid)
        return Response(s.DetectionSerializer(detections_of(oid), many=True).data)


class NonDetections(BaseView):
    @extend_schema(responses={200: s.NonDetectionSerializer(many=True), **ERRORS},
                   summary="Upper limits (non-detections) of an object")
    def get(self, request, oid):
        get_object_or_404(oid)
        return Response(s.NonDetectionSerializer(non_detections_of(oid), many=True).data)


class Lightcurve(BaseView):
    @extend_schema(responses={200: s.LightcurveSerializer, **ERRORS}, summary="Detections and non-detections")
    def get(self, request, oid):
        get_object_or_404(oid)
        return Response({
            "detections": s.DetectionSerializer(detections_of(oid), many=True).data,
            "non_detections": s.NonDetectionSerializer(non_detections_of(oid), many=True).data,
        })


class MagStatsView(BaseView):
    @extend_schema(responses={200: s.MagStatsSerializer(many=True), **ERRORS}, summary="Magnitude statistics per band")
    def get(self, request, oid):
        get_object_or_404(oid)
        return Response(s.MagStatsSerializer(MagStats.objects.filter(oid=oid).order_by("fid"), many=True).data)


class Probabilities(BaseView):
    @extend_schema(parameters=[OpenApiParameter("classifier", str), OpenApiParameter("classifier_version", str)],
                   responses={200: s.ProbabilitySerializer(many=True), **ERRORS},
                   summary="Class probabilities of every classifier")
    def get(self, request, oid):
        get_object_or_404(oid)
        probs = Probability.objects.filter(oid=oid)
        if request.query_params.get("classifier"):
            probs = probs.filter(classifier_name=request.query_params["classifier"])
        if request.query_params.get("classifier_version"):
            probs = probs.filter(classifier_version=request.query_params["classifier_version"])
        probs = probs.order_by("classifier_name", "classifier_version", "ranking", "class_name")
        return Response(s.ProbabilitySerializer(probs, many=True).data)


FEATURE_PARAMS = [OpenApiParameter("fid", int, description="Band (1 g, 2 r)"), OpenApiParameter("version", str)]


def feature_rows(request, oid):
    get_object_or_404(oid)
    rows = Feature.objects.filter(oid=oid)
    fid = request.query_params.get("fid")
    if fid not in (None, ""):
        try:
            rows = rows.filter(fid=int(fid))
        except ValueError:
            raise BadRequest("fid", f"{fid!r} is not an integer")
    if request.query_params.get("version"):
        rows = rows.filter(version=request.query_params["version"])
    return rows


class Features(BaseView):
    @extend_schema(parameters=FEATURE_PARAMS, responses={200: s.FeatureSerializer(many=True), **ERRORS},
                   summary="Light-curve features (missing ones: value null and missing_reason)")
    def get(self, request, oid):
        rows = feature_rows(request, oid).order_by("name", "version")
        return Response(s.FeatureSerializer(rows, many=True).data)


class SingleFeature(BaseView):
    @extend_schema(parameters=FEATURE_PARAMS, responses={200: s.FeatureSerializer(many=True), **ERRORS},
                   operation_id="ztf_v1_objects_feature_list", summary="One feature (a list, one row per version; a name without its _1/_2 band "
                           "suffix gives both bands)")
    def get(self, request, oid, name):
        rows = feature_rows(request, oid)
        exact = rows.filter(name=name)
        if not exact.exists():
            exact = rows.filter(name__in=[f"{name}_1", f"{name}_2"])
        if not exact.exists():
            raise exceptions.NotFound(f"object {oid} has no feature {name}")
        return Response(s.FeatureSerializer(exact.order_by("name", "version"), many=True).data)


def classifier_table():
    """Every (classifier, version) with probabilities stored, and its classes (alphabetical)."""
    rows = (Probability.objects.values_list("classifier_name", "classifier_version", "class_name")
            .distinct().order_by("classifier_name", "classifier_version", "class_name"))
    table = {}
    for name, version, class_name in rows:
        table.setdefault((name, version), []).append(class_name)
    return [{"classifier_name": n, "classifier_version": v, "classes": c} for (n, v), c in table.items()]


class Classifiers(BaseView):
    @extend_schema(responses={200: s.ClassifierSerializer(many=True)}, summary="Classifiers and their classes")
    def get(self, request):
        return Response(classifier_table())


class ClassifierClasses(BaseView):
    @extend_schema(responses={200: s.ClassSerializer(many=True), **ERRORS}, summary="Classes of one classifier")
    def get(self, request, classifier_name, classifier_version):
        classes = (Probability.objects.filter(classifier_name=classifier_name, classifier_version=classifier_version)
                   .values_list("class_name", flat=True).distinct().order_by("class_name"))
        if not classes:
            raise exceptions.NotFound(f"no classifier {classifier_name} version {classifier_version}")
        return Response([{"name": c} for c in classes])


def _candid(request):
    raw = request.query_params.get("candid")
    if not raw:
        raise BadRequest("candid", "required")
    try:
        return int(raw)
    except ValueError:
        raise BadRequest("candid", f"{raw!r} is not an integer")


STAMP_PARAMS = [
    OpenApiParameter("oid", str, description="Object id (checked against the alert when given)"),
    OpenApiParameter("candid", int, required=True, description="Alert candid"),
]


class GetStamp(BaseView):
    @extend_schema(
        parameters=STAMP_PARAMS + [
            OpenApiParameter("type", str, enum=list(STAMP_TYPES), description="Cutout (default science)"),
            OpenApiParameter("format", str, enum=["png", "fits"], description="png (default) or gzipped FITS"),
            OpenApiParameter("stretch", str, enum=list(STRETCHES), description="PNG stretch (default asinh)"),
        ],
        responses={(200, "image/png"): OpenApiTypes.BINARY, (200, "application/fits"): OpenApiTypes.BINARY,
                   **ERRORS, 422: s.ErrorSerializer},
        summary="A cutout of an alert (the stamps_ztf get_stamp route)")
    def get(self, request):
        candid = _candid(request)
        stamp_type = request.query_params.get("type", "science")
        fmt = request.query_params.get("format", "png").lower()
        stretch = request.query_params.get("stretch", "asinh")
        if stamp_type not in STAMP_TYPES:
            raise BadRequest("type", f"{stamp_type!r} is not one of {', '.join(STAMP_TYPES)}")
        if fmt not in ("png", "fits"):
            raise BadRequest("format", f"{fmt!r} is not png or fits")
        if stretch not in STRETCHES:
            raise BadRequest("stretch", f"{stretch!r} is not one of {', '.join(STRETCHES)}")
        try:
            _, packet = raw_alert(candid, request.query_params.get("oid"))
            if fmt == "fits":
                response = HttpResponse(cutout_bytes(packet, stamp_type), content_type="application/fits")
                response["Content-Disposition"] = f'attachment; filename="{candid}_{stamp_type}.fits.gz"'
                return response
            response = HttpResponse(stamp_png(packet, stamp_type, stretch), content_type="image/png")
        except StampMissing as exc:
            raise exceptions.NotFound(str(exc))
        except BadCutout as exc:
            raise UnusableCutout(f"the {stamp_type} cutout of alert {candid} cannot be shown: {exc}")
        response["Cache-Control"] = "public, max-age=86400"
        return response

    # drf's ?format= selects a renderer; here it selects the image format, so take it before drf does
    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)


class GetAvro(BaseView):
    @extend_schema(parameters=STAMP_PARAMS, responses={(200, "avro/binary"): OpenApiTypes.BINARY, **ERRORS},
                   summary="The raw Avro packet of an alert, byte for byte (the stamps_ztf get_avro route)")
    def get(self, request):
        candid = _candid(request)
        try:
            _, packet = raw_alert(candid, request.query_params.get("oid"))
        except StampMissing as exc:
            raise exceptions.NotFound(str(exc))
        response = HttpResponse(packet, content_type="avro/binary")
        response["Content-Disposition"] = f'attachment; filename="{candid}.avro"'
        return response


class ClientConfig(BaseView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT},
                   summary="A config file for the alerce client (ALERCE_CONFIG_PATH) pointing at this server")
    def get(self, request):
        return Response(client_config(request.build_absolute_uri("/").rstrip("/")))


FP_KEYS = ("mjd", "fid")


class ForcedPhotometryView(BaseView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS},
                   summary="Forced photometry epochs (the client's v2 forced-photometry route): oid, mjd, fid, "
                           "and every stored column under extra_fields")
    def get(self, request, oid):
        get_object_or_404(oid)
        columns = [f.name for f in ForcedPhotometry._meta.fields if f.name not in ("id", "oid")]
        rows = []
        for row in ForcedPhotometry.objects.filter(oid=oid).order_by("mjd", "fid").values(*columns):
            rows.append({"oid": oid, "aid": None, "sid": None, "mjd": row["mjd"], "fid": row["fid"],
                         "extra_fields": row})  # mjd and fid in both: the client merges on them
        return Response(rows)
