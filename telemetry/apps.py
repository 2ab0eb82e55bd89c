from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from metrics.signals import aggregation_completed
        from telemetry.credentials import robot_changed
        from telemetry.dashboard import push_changed_counters
        from telemetry.models import Robot
        from telemetry.retention import ensure_schedule_after_migrate

        # Dashboards see the mission counters move right after each aggregation run.
        aggregation_completed.connect(push_changed_counters, dispatch_uid="telemetry.dashboard.counters")
        # Migrating (and so `runfleet`) creates the daily history prune, idempotently.
        post_migrate.connect(ensure_schedule_after_migrate, sender=self, dispatch_uid="telemetry.retention.schedule")
        # Every process's credential cache forgets a robot that was saved (rotated, revoked, renamed) or deleted.
        post_save.connect(robot_changed, sender=Robot, dispatch_uid="telemetry.credentials.saved")
        post_delete.connect(robot_changed, sender=Robot, dispatch_uid="telemetry.credentials.deleted")
