"""Routes exactly where the alerce client (2.3.x default_config.json) expects them under ZTF_API_URL,
plus the stamps_ztf routes at the root (AVRO_URL = this server) and the OpenAPI schema and docs."""
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from pipeline.api import views

OID = "<str:oid>"
urlpatterns = [
    path("ztf/v1/objects", views.ObjectList.as_view(), name="api-objects"),
    path(f"ztf/v1/objects/{OID}", views.ObjectDetail.as_view(), name="api-object"),
    path(f"ztf/v1/objects/{OID}/detections", views.Detections.as_view(), name="api-detections"),
    path(f"ztf/v1/objects/{OID}/non_detections", views.NonDetections.as_view(), name="api-non-detections"),
    path(f"ztf/v1/objects/{OID}/lightcurve", views.Lightcurve.as_view(), name="api-lightcurve"),
    path(f"ztf/v1/objects/{OID}/magstats", views.MagStatsView.as_view(), name="api-magstats"),
    path(f"ztf/v1/objects/{OID}/probabilities", views.Probabilities.as_view(), name="api-probabilities"),
    path(f"ztf/v1/objects/{OID}/features", views.Features.as_view(), name="api-features"),
    path(f"ztf/v1/objects/{OID}/features/<path:name>", views.SingleFeature.as_view(), name="api-feature"),
    path("ztf/v1/classifiers", views.Classifiers.as_view(), name="api-classifiers"),
    path("ztf/v1/classifiers/<str:classifier_name>/<str:classifier_version>/classes",
         views.ClassifierClasses.as_view(), name="api-classes"),
    path("ztf/v1/alerce_config.json", views.ClientConfig.as_view(), name="api-client-config"),
    path("ztf/v1/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("ztf/v1/docs", views.same_origin_only(SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    path("ztf/v1/redoc", views.same_origin_only(SpectacularRedocView.as_view(
        url_name="api-schema", template_name="pipeline/api_redoc.html")), name="api-redoc"),
    path(f"v2/lightcurve/forced-photometry/{OID}", views.ForcedPhotometryView.as_view(), name="api-forced"),
    re_path(r"^(ztf|v2)/.*$", views.not_found_json),
    path("get_stamp", views.GetStamp.as_view(), name="api-stamp"),
    path("get_avro", views.GetAvro.as_view(), name="api-avro"),
]
