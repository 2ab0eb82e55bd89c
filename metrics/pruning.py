"""Retention of counter history."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from metrics.models import CounterSnapshot


def prune_snapshots(days: int | None = None) -> int:
    """Delete snapshots older than METRICS_SNAPSHOT_RETENTION_DAYS; the daily Django-Q2 job. Returns how many."""
    cutoff = timezone.now() - timedelta(days=days or settings.METRICS_SNAPSHOT_RETENTION_DAYS)
    deleted, _ = CounterSnapshot.objects.filter(taken_at__lt=cutoff).delete()
    return deleted
