from django.urls import path

from . import views

app_name = "pipeline"
urlpatterns = [
    path("", views.index, name="index"),
    path("alerts/<int:candid>.avro", views.alert_avro, name="alert-avro"),
    path("timing/", views.processing_times, name="timing"),
    path("timing.png", views.processing_times_png, name="timing-png"),
]
