"""Five-minute rollups of the history samples, kept up to date as samples are written.

A bucketed history request over a long range (telemetry.buckets) reads these instead of every
sample: 30 days of one robot at 10 s sampling are 259,200 samples but 8,640 rollups. Each rollup
keeps count, min, max and sum of every metric, so buckets built from them are exact. Samples are
added with one upsert per write (`add_samples`, in the history writer's transaction); backfilled
samples land in the rollups of their own time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Count, Max, Min, Sum

from telemetry.frames import METRICS
from telemetry.models import TelemetryRollup, TelemetrySample

ROLLUP_SECONDS = 300
TABLE = TelemetryRollup._meta.db_table
COLUMNS = ["robot_id", "start", "count"] + [f"{name}_{part}" for name in METRICS for part in ("min", "max", "sum")]


def window_start(moment: datetime) -> datetime:
    seconds = int(moment.timestamp()) // ROLLUP_SECONDS * ROLLUP_SECONDS
    return datetime.fromtimestamp(seconds, tz=UTC)


def _summaries(samples: Iterable[TelemetrySample]) -> dict[tuple[int, datetime], list]:
    rows: dict[tuple[int, datetime], list] = {}
    for sample in samples:
        key = (sample.robot_id, window_start(sample.reported_at))
        values = [getattr(sample, name) for name in METRICS]
        row = rows.get(key)
        if row is None:
            rows[key] = [1, *(v for value in values for v in (value, value, value))]
            continue
        row[0] += 1
        for i, value in enumerate(values):
            base = 1 + 3 * i
            row[base] = min(row[base], value)
            row[base + 1] = max(row[base + 1], value)
            row[base + 2] += value
    return rows


def _upsert_sql(rows: int) -> str:
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    updates = [f"count = {TABLE}.count + excluded.count"]
    for name in METRICS:
        updates.append(f"{name}_min = {least}({TABLE}.{name}_min, excluded.{name}_min)")
        updates.append(f"{name}_max = {greatest}({TABLE}.{name}_max, excluded.{name}_max)")
        updates.append(f"{name}_sum = {TABLE}.{name}_sum + excluded.{name}_sum")
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(COLUMNS)) + ")"] * rows)
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES {placeholders} "
        f"ON CONFLICT (robot_id, start) DO UPDATE SET {', '.join(updates)}"
    )


def add_samples(samples: Iterable[TelemetrySample], chunk: int = 200) -> None:
    """Fold samples into their rollups: one atomic upsert per chunk of windows, safe across processes."""
    rows = [
        [robot_pk, connection.ops.adapt_datetimefield_value(start), *summary]
        for (robot_pk, start), summary in _summaries(samples).items()
    ]
    with connection.cursor() as cursor:
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            cursor.execute(_upsert_sql(len(part)), [value for row in part for value in row])


def store_samples(samples: list[TelemetrySample]) -> list[TelemetrySample]:
    """Insert history samples and fold them into their rollups (inside a transaction); the ones stored.

    A sample already stored (same robot and instant: a backfill batch resent because its ack was
    lost) is skipped in both, so a rollup never counts a sample twice.
    """
    unique: dict[tuple[int, datetime], TelemetrySample] = {}
    for sample in samples:
        unique.setdefault((sample.robot_id, sample.reported_at), sample)
    if not unique:
        return []
    instants = [instant for _, instant in unique]
    stored = set(
        TelemetrySample.objects.filter(
            robot_id__in={robot_pk for robot_pk, _ in unique},
            reported_at__gte=min(instants),
            reported_at__lte=max(instants),
        ).values_list("robot_id", "reported_at")
    )
    fresh = [sample for key, sample in unique.items() if key not in stored]
    TelemetrySample.objects.bulk_create(fresh, batch_size=500, ignore_conflicts=True)
    add_samples(fresh)
    return fresh


def rebuild(robot_pk: int | None = None) -> int:
    """Recompute rollups from the samples (after a bulk import of history, say)."""
    from telemetry.buckets import BucketStart

    samples = TelemetrySample.objects.order_by()
    rollups = TelemetryRollup.objects.all()
    if robot_pk is not None:
        samples, rollups = samples.filter(robot_id=robot_pk), rollups.filter(robot_id=robot_pk)
    rollups.delete()
    return len(TelemetryRollup.objects.bulk_create(from_samples(samples, BucketStart), batch_size=500))


def from_samples(samples, bucket_start) -> list:
    """Rollups computed in the database from a queryset of samples (also used by a migration)."""
    model = samples.model._meta.apps.get_model("telemetry", "TelemetryRollup")
    aggregates = {}
    for name in METRICS:
        aggregates |= {f"{name}_min": Min(name), f"{name}_max": Max(name), f"{name}_sum": Sum(name)}
    grouped = (
        samples.annotate(window=bucket_start("reported_at", ROLLUP_SECONDS))
        .values("robot_id", "window")
        .annotate(samples=Count("pk"), **aggregates)
    )
    return [
        model(start=datetime.fromtimestamp(row.pop("window"), tz=UTC), count=row.pop("samples"), **row)
        for row in grouped.iterator(chunk_size=2000)
    ]


def prune(cutoff: datetime) -> int:
    """Delete rollups whose whole window is older than `cutoff` (the samples' retention)."""
    return TelemetryRollup.objects.filter(start__lt=cutoff - timedelta(seconds=ROLLUP_SECONDS)).delete()[0]
