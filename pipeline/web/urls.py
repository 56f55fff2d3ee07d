from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from pipeline.web import views

app_name = "pipeline"
urlpatterns = [
    path("", views.index, name="index"),
    path("search", views.search, name="search"),
    path("search/cutouts.zip", views.download_cutouts, name="download-cutouts"),
    path("search/objects.csv", views.download_objects_csv, name="download-csv"),
    path("object/<str:oid>", views.object_page, name="object"),
    path("pipeline", views.pipeline_page, name="pipeline"),
    path("classifiers", views.classifiers_page, name="classifiers"),
    path("outliers", views.outliers_page, name="outliers"),
    path("favicon.ico", RedirectView.as_view(url=static("pipeline/favicon.svg"), permanent=True)),
    path("alerts/<int:candid>.avro", views.alert_avro, name="alert-avro"),
    path("timing/", views.processing_times, name="timing"),
    path("timing.png", views.processing_times_png, name="timing-png"),
]
