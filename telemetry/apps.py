from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save, pre_delete


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry.alert_records import rule_deleting, rule_saved
        from telemetry.credentials import robot_changed
        from telemetry.history import ensure_schedule
        from telemetry.models import AlertRule, Robot

        # Migrating (and so `runfleet`) creates the daily history prune, idempotently.
        post_migrate.connect(ensure_schedule, sender=self, dispatch_uid="telemetry.history.schedule")
        # A disabled or deleted rule leaves no active alert behind.
        post_save.connect(rule_saved, sender=AlertRule, dispatch_uid="telemetry.alerts.rule_saved")
        pre_delete.connect(rule_deleting, sender=AlertRule, dispatch_uid="telemetry.alerts.rule_deleting")
        # Every process's credential cache forgets a robot that was saved (rotated, revoked, renamed) or deleted.
        post_save.connect(robot_changed, sender=Robot, dispatch_uid="telemetry.credentials.saved")
        post_delete.connect(robot_changed, sender=Robot, dispatch_uid="telemetry.credentials.deleted")
