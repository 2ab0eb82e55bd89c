"""Retention of telemetry history, pruned daily: samples older than TELEMETRY_RETENTION_DAYS, and robot
sessions that ended more than TELEMETRY_SESSION_RETENTION_DAYS ago."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.db.models import QuerySet
from django.utils import timezone

from fleet import schedules as fleet_schedules
from fleet.schedules import schedules_table_exists
from telemetry import presence
from telemetry.models import RobotSession, TelemetrySample

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "prune_telemetry_samples"
SESSIONS_SCHEDULE_NAME = "prune_robot_sessions"
# Small batches, each its own transaction, so ingest's inserts never wait long behind the prune.
PRUNE_BATCH = 5000


def _delete_in_batches(old: QuerySet, batch_size: int) -> int:
    deleted = 0
    while True:
        ids = list(old.order_by().values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += old.model.objects.filter(id__in=ids).delete()[0]


def prune_samples(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete samples reported before now - TELEMETRY_RETENTION_DAYS. Returns how many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
    deleted = _delete_in_batches(TelemetrySample.objects.filter(reported_at__lt=cutoff), batch_size)
    logger.info("pruned %d telemetry samples reported before %s", deleted, cutoff.isoformat())
    return deleted


def prune_sessions(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete sessions that ended before now - TELEMETRY_SESSION_RETENTION_DAYS. Returns how many were deleted.

    A session that never ended (its process was killed) and began before the cutoff goes too, unless its
    connection still holds a live presence lease: a robot connected for longer than the retention keeps its row.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.TELEMETRY_SESSION_RETENTION_DAYS)
    deleted = _delete_in_batches(RobotSession.objects.filter(disconnected_at__lt=cutoff), batch_size)
    unended = list(
        RobotSession.objects.filter(disconnected_at__isnull=True, connected_at__lt=cutoff).values_list(
            "id", "connection_id"
        )
    )
    if unended:
        try:
            live = presence.live_connections([connection_id for _, connection_id in unended])
        except (redis.RedisError, OSError) as exc:
            logger.warning("kept %d unended sessions: presence unavailable (%s)", len(unended), exc)
        else:
            orphans = [pk for pk, connection_id in unended if connection_id not in live]
            deleted += _delete_in_batches(RobotSession.objects.filter(id__in=orphans), batch_size)
    logger.info("pruned %d robot sessions that ended before %s", deleted, cutoff.isoformat())
    return deleted


def ensure_schedule(using: str = DEFAULT_DB_ALIAS) -> None:
    """Create or update the daily prune schedules; running it again changes nothing (one row each, by name)."""
    from django_q.models import Schedule

    if not schedules_table_exists(using):
        return  # django_q not migrated yet; the next full migrate creates it
    fleet_schedules.ensure_schedule(
        SCHEDULE_NAME, "telemetry.retention.prune_samples", using, schedule_type=Schedule.DAILY
    )
    fleet_schedules.ensure_schedule(
        SESSIONS_SCHEDULE_NAME, "telemetry.retention.prune_sessions", using, schedule_type=Schedule.DAILY
    )


def ensure_schedule_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    ensure_schedule(using=using)
