from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from telemetry import alert_views, protocol, views

router = SimpleRouter()
router.register("api/telemetry/alert-rules", alert_views.AlertRuleViewSet, basename="alert-rule")

# `str`, not a stricter pattern: a malformed robot_id still gets the API's JSON 404, not Django's HTML one.
urlpatterns = [
    path("api/telemetry/info", views.InfoView.as_view(), name="telemetry-info"),
    path("api/telemetry/robots/", views.RobotListView.as_view(), name="robot-list"),
    path("api/telemetry/robots/<str:robot_id>/", views.RobotDetailView.as_view(), name="robot-detail"),
    path("api/telemetry/robots/<str:robot_id>/metrics", views.RobotMetricsView.as_view(), name="robot-metrics"),
    path("api/telemetry/robots/<str:robot_id>/history/", views.RobotHistoryView.as_view(), name="robot-history"),
    path("api/telemetry/protocol/v1/", protocol.schema_index, name="protocol-index"),
    path("api/telemetry/protocol/v1/<str:name>.json", protocol.schema_file, name="protocol-schema"),
    path("api/telemetry/alerts/", alert_views.AlertListView.as_view(), name="alert-list"),
    *router.urls,
]
