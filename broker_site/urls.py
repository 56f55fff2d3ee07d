from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("pipeline.api.urls")),
    path("multisurvey/", include("pipeline.api.multisurvey")),  # the alerce client's multisurvey (Rubin) routes
    path("", include("pipeline.web.urls")),
]
