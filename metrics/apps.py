from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MetricsConfig(AppConfig):
    name = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from metrics.live import push_changed_counters
        from metrics.schedules import ensure_metrics_schedules
        from metrics.signals import aggregation_completed

        # After every migrate (runfleet runs one at start), so the schedules always exist, once each.
        post_migrate.connect(ensure_metrics_schedules, sender=self, dispatch_uid="metrics.ensure_schedules")
        # Dashboards see the mission counters move right after each aggregation run.
        aggregation_completed.connect(push_changed_counters, dispatch_uid="metrics.live.counters")
