from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fleet.health import healthz
from fleet.login_throttle import throttle_logins
from telemetry.views import dashboard_page


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    # Resolved per request: with the manifest storage (debug off), the hashed name exists only after collectstatic.
    return HttpResponseRedirect(static("fleet/favicon.svg"))


# The login page and every admin page carry the product's name.
admin.site.site_header = "Fleet Telemetry"
admin.site.site_title = "Fleet Telemetry"
admin.site.index_title = "Administration"

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    # Browsers ask every page's host for /favicon.ico, admin and API pages included.
    path("favicon.ico", favicon),
    path("healthz", healthz, name="healthz"),
    path("dashboard/", dashboard_page, name="dashboard"),
    # The login views, throttled; listed before the includes that also route them.
    path("admin/login/", throttle_logins(admin.site.login)),
    path("api/auth/login/", throttle_logins(LoginView.as_view(template_name="rest_framework/login.html"))),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/events/", include("fleet.events.urls")),
    path("", include("metrics.urls")),
    path("", include("telemetry.urls")),
]
