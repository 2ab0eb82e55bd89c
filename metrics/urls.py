from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from metrics.api import CounterViewSet
from metrics.views import metrics_view

router = SimpleRouter()
router.register("api/metrics/counters", CounterViewSet, basename="metrics-counter")

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    *router.urls,
]
