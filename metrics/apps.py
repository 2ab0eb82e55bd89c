from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from metrics.schedules import ensure_metrics_schedules

        # After every migrate (runfleet runs one at start), so the schedules always exist, once each.
        post_migrate.connect(ensure_metrics_schedules, sender=self, dispatch_uid="metrics.ensure_schedules")
