from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fleet.health import healthz
from telemetry.views import dashboard_page

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("dashboard/", dashboard_page, name="dashboard"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/events/", include("fleet.events.urls")),
    path("", include("metrics.urls")),
    path("", include("telemetry.urls")),
]
