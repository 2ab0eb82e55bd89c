"""Retention of telemetry history: samples older than TELEMETRY_RETENTION_DAYS are pruned daily."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

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
    logger.info("pruned %d telemetry samples reported before %s", deleted, cutoff.isoformat())
    return deleted


def ensure_schedule(using: str = "default") -> None:
    """Create or update the daily prune schedule; running it again changes nothing (one row, by name)."""
    from django_q.models import Schedule

    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return  # django_q not migrated yet (e.g. `migrate telemetry` alone); the next full migrate creates it
    Schedule.objects.using(using).update_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": "telemetry.retention.prune_samples", "schedule_type": Schedule.DAILY, "repeats": -1},
    )


def ensure_schedule_after_migrate(sender, using: str = "default", **kwargs) -> None:
    ensure_schedule(using=using)
