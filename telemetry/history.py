"""Telemetry history in the database: the batch writer (one batch at a time, retried) and its pruning.

A row that fails to insert (a duplicate connection id, a value the database refuses) is logged and
skipped (fleet.rows): it never sinks the rest of its batch, every other robot's samples, sessions
and backfill acks. A backfill batch with a skipped sample gets no ack, so its robot sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, transaction
from django.utils import timezone

from fleet.pruning import PRUNE_BATCH, prune_older_than
from fleet.rows import insert_rows
from fleet.schedules import ensure_schedule as ensure_named_schedule
from fleet.schedules import schedules_table_exists
from telemetry import latency, presence, rollups
from telemetry.models import Robot, RobotSession, TelemetrySample

logger = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0
# While the database is unreachable, keep at most this many samples; beyond it, drop the oldest.
MAX_PENDING_SAMPLES = 100_000
SCHEDULE_NAME = "prune_telemetry_samples"
SESSIONS_SCHEDULE_NAME = "prune_robot_sessions"


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass
class DbBatch:
    """What one transaction writes: samples, session rows, last_seen_at; and who waits for the commit."""

    samples: list[TelemetrySample] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    new_sessions: dict[str, dict] = field(default_factory=dict)
    closed_sessions: dict[str, dict] = field(default_factory=dict)
    # Backfill batches awaiting their commit, each with its samples (acked only if all of them are stored).
    waiters: dict[asyncio.Future, list[TelemetrySample]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.samples or self.seen or self.new_sessions or self.closed_sessions or self.waiters)

    def open_session(self, connection_id: str, robot_pk: int, connected_at: float) -> None:
        self.new_sessions[connection_id] = {
            "connection_id": connection_id,
            "robot_id": robot_pk,
            "connected_at": utc(connected_at),
        }

    def close_session(self, connection_id: str, fields: dict) -> None:
        fields = {**fields, "disconnected_at": utc(fields["disconnected_at"])}
        pending = self.new_sessions.get(connection_id)
        if pending is not None:
            pending.update(fields)
        else:
            self.closed_sessions[connection_id] = fields

    def then(self, newer: DbBatch) -> DbBatch:
        """This batch followed by a newer one, as one; the oldest samples go first beyond the cap."""
        samples = self.samples + newer.samples
        if len(samples) > MAX_PENDING_SAMPLES:
            dropped = len(samples) - MAX_PENDING_SAMPLES
            del samples[:dropped]
            logger.warning("telemetry history buffer full; dropped the %d oldest samples", dropped)
        return DbBatch(
            samples=samples,
            seen=self.seen | newer.seen,
            new_sessions={**self.new_sessions, **newer.new_sessions},
            closed_sessions={**self.closed_sessions, **newer.closed_sessions},
            waiters={**self.waiters, **newer.waiters},
        )


class RowsSkipped(Exception):
    """Some of a backfill batch's samples could not be stored: the batch gets no ack."""


def write_db_batch(batch: DbBatch, seen_at: datetime) -> set[int]:
    """One transaction: new sessions, closed sessions, samples, last_seen_at. Returns the skipped samples' id()."""
    with transaction.atomic():
        # A robot deleted while connected must not sink the whole batch on its foreign key.
        pks = {fields["robot_id"] for fields in batch.new_sessions.values()} | {s.robot_id for s in batch.samples}
        existing = set(Robot.objects.filter(pk__in=pks).values_list("pk", flat=True)) if pks else set()
        sessions = [RobotSession(**fields) for fields in batch.new_sessions.values() if fields["robot_id"] in existing]
        insert_rows(RobotSession, sessions)
        for connection_id, fields in batch.closed_sessions.items():
            RobotSession.objects.filter(connection_id=connection_id).update(**fields)
        # A sample already stored (a backfill batch resent because its ack was lost) is ignored, not skipped.
        samples = [sample for sample in batch.samples if sample.robot_id in existing]
        # Stored with their rollups; a sample already stored is ignored there, a sample that fails is skipped.
        skipped = insert_rows(TelemetrySample, samples, insert=rollups.store_samples)
        seen = sorted(batch.seen)
        for start in range(0, len(seen), 500):
            Robot.objects.filter(robot_id__in=seen[start : start + 500]).update(last_seen_at=seen_at)
    return {id(sample) for sample in skipped}


class HistoryWriter:
    """Writes batches in a worker thread, one at a time; a batch the database refused is retried first."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.started_at = 0.0
        self.retry = DbBatch()

    def idle(self) -> bool:
        return self.task is None and not self.retry

    def due(self, now: float, urgent: bool) -> bool:
        return self.task is None and (urgent or now - self.started_at >= WRITE_INTERVAL)

    def start(self, batch: DbBatch, now: float) -> asyncio.Task | None:
        """Write the retried batch and then `batch`, in one transaction."""
        if self.task is not None:
            raise RuntimeError("a history write is already running")
        batch, self.retry = self.retry.then(batch) if self.retry else batch, DbBatch()
        if not batch:
            return None
        self.started_at = now
        self.task = asyncio.ensure_future(self._write(batch))
        return self.task

    async def wait(self) -> None:
        while self.task is not None:
            await self.task

    async def _write(self, batch: DbBatch) -> None:
        started = time.perf_counter()
        try:
            skipped = await database_sync_to_async(write_db_batch)(batch, utc(time.time()))
            latency.FLUSH_DURATION.labels("db").observe(time.perf_counter() - started)
        except OperationalError as exc:
            # The database is busy or away: keep the batch for the next write.
            logger.warning("telemetry history write failed (%s); retrying", exc)
            self.retry = batch
        except Exception as exc:
            logger.exception("telemetry history write failed; dropping %d samples", len(batch.samples))
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter, samples in batch.waiters.items():
                if waiter.done():
                    continue
                if any(id(sample) in skipped for sample in samples):
                    # The ack promises every frame is stored: without it the robot sends the batch again.
                    waiter.set_exception(RowsSkipped())
                else:
                    waiter.set_result(None)
        finally:
            self.task = None


def prune_samples(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete samples (and their rollups) reported before now - TELEMETRY_RETENTION_DAYS; the daily job.

    Returns how many samples.
    """
    deleted = prune_older_than(TelemetrySample, "reported_at", settings.TELEMETRY_RETENTION_DAYS, now, batch_size)
    rollups.prune((now or timezone.now()) - timedelta(days=settings.TELEMETRY_RETENTION_DAYS))
    return deleted


def prune_sessions(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete sessions that ended before now - TELEMETRY_SESSION_RETENTION_DAYS; the daily job. Returns how many.

    A session that never ended (its process was killed) and began before the cutoff goes too, unless its
    connection still holds a live presence lease: a robot connected for longer than the retention keeps its row.
    """
    days = settings.TELEMETRY_SESSION_RETENTION_DAYS
    deleted = prune_older_than(RobotSession, "disconnected_at", days, now, batch_size)
    cutoff = (now or timezone.now()) - timedelta(days=days)
    unended = RobotSession.objects.filter(disconnected_at__isnull=True, connected_at__lt=cutoff)
    candidates = list(unended.values_list("id", "connection_id"))
    if not candidates:
        return deleted
    try:
        live = presence.live_connections([connection_id for _, connection_id in candidates])
    except (redis.RedisError, OSError) as exc:
        logger.warning("kept %d unended sessions: presence unavailable (%s)", len(candidates), exc)
        return deleted
    orphans = [pk for pk, connection_id in candidates if connection_id not in live]
    for start in range(0, len(orphans), batch_size):
        deleted += RobotSession.objects.filter(id__in=orphans[start : start + batch_size]).delete()[0]
    return deleted


def ensure_schedule(using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate handler: the daily prunes, one row each by name however often it runs."""
    from django_q.models import Schedule

    if not schedules_table_exists(using):
        return  # django_q not migrated yet; the next full migrate creates it
    ensure_named_schedule(
        SCHEDULE_NAME, "telemetry.history.prune_samples", using, schedule_type=Schedule.DAILY, cron=None, minutes=None
    )
    ensure_named_schedule(
        SESSIONS_SCHEDULE_NAME,
        "telemetry.history.prune_sessions",
        using,
        schedule_type=Schedule.DAILY,
        cron=None,
        minutes=None,
    )
