from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry.history import ensure_schedule

        # Migrating (and so `runfleet`) creates the daily history prune, idempotently.
        post_migrate.connect(ensure_schedule, sender=self, dispatch_uid="telemetry.history.schedule")
