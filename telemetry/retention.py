"""Retention of telemetry history: samples (and their rollups) older than TELEMETRY_RETENTION_DAYS are pruned daily."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from fleet import schedules as fleet_schedules
from fleet.schedules import schedules_table_exists
from telemetry import rollups
from telemetry.models import TelemetrySample

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "prune_telemetry_samples"
# Small batches, each its own transaction, so ingest's inserts never wait long behind the prune.
PRUNE_BATCH = 5000


def prune_samples(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete samples reported before now - TELEMETRY_RETENTION_DAYS. Returns how many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
    old = TelemetrySample.objects.filter(reported_at__lt=cutoff).order_by()
    deleted = 0
    while True:
        ids = list(old.values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        deleted += TelemetrySample.objects.filter(id__in=ids).delete()[0]
    rolled = rollups.prune(cutoff)
    logger.info("pruned %d telemetry samples and %d rollups before %s", deleted, rolled, cutoff.isoformat())
    return deleted


def ensure_schedule(using: str = DEFAULT_DB_ALIAS) -> None:
    """Create or update the daily prune schedule; running it again changes nothing (one row, by name)."""
    from django_q.models import Schedule

    if not schedules_table_exists(using):
        return  # django_q not migrated yet; the next full migrate creates it
    fleet_schedules.ensure_schedule(
        SCHEDULE_NAME, "telemetry.retention.prune_samples", using, schedule_type=Schedule.DAILY
    )


def ensure_schedule_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    ensure_schedule(using=using)
