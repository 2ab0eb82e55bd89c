"""Long-range history: one robot's samples summarised per time bucket, computed in the database.

Buckets are aligned to multiples of their size in Unix time (hour buckets start on the hour, in
UTC), so the same bucket has the same start in every request. Empty buckets are left out.
Buckets that are multiples of five minutes are built from telemetry.rollups, so 30 days of
hourly buckets read 8,640 rollups rather than 259,200 samples.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Aggregate, BigIntegerField, Count, Func, Max, Min, QuerySet, Sum

from telemetry.frames import METRICS
from telemetry.models import Robot, TelemetryRollup, TelemetrySample
from telemetry.rollups import ROLLUP_SECONDS

MAX_BUCKETS = 2000
MAX_BUCKET_SECONDS = 366 * 86400
DEFAULT_SPAN = timedelta(days=1)


class BucketStart(Func):
    """The Unix second at which a datetime's bucket of `size` seconds starts."""

    output_field = BigIntegerField()

    def __init__(self, expression, size: int) -> None:
        super().__init__(expression)
        self.size = int(size)  # an int we validated: written into the SQL, never a client's string

    def as_sqlite(self, compiler, connection, **extra):
        template = f"((unixepoch(%(expressions)s) / {self.size}) * {self.size})"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = f"(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / {self.size}) * {self.size})::bigint"
        return self.as_sql(compiler, connection, template=template, **extra)


def bucket_count(since: datetime, until: datetime, size: int) -> int:
    """How many aligned buckets [since, until) touches."""
    first = int(since.timestamp()) // size
    last = -(-int(until.timestamp()) // size)  # ceiling
    return max(last - first, 0)


def default_since(until: datetime, size: int) -> datetime:
    """A day before `until`, or less when a day would need more than MAX_BUCKETS buckets."""
    return until - min(DEFAULT_SPAN, timedelta(seconds=size * (MAX_BUCKETS - 1)))


def _summarise(rows: QuerySet, time_field: str, size: int, samples: Aggregate, columns: str) -> list[dict]:
    """Per bucket: `samples` and min, max, sum of each metric, read from `columns` ("{name}" or "{name}_{part}")."""
    aggregates = {}
    for name in METRICS:
        for part, function in (("min", Min), ("max", Max), ("sum", Sum)):
            aggregates[f"{name}_{part}"] = function(columns.format(name=name, part=part))
    grouped = rows.annotate(bucket=BucketStart(time_field, size)).values("bucket")
    return list(grouped.annotate(samples=samples, **aggregates).order_by())


def _raw(robot: Robot, since: datetime, until: datetime, size: int) -> list[dict]:
    rows = TelemetrySample.objects.filter(robot=robot, reported_at__gte=since, reported_at__lt=until)
    return _summarise(rows, "reported_at", size, Count("pk"), "{name}")


def _rolled_up(robot: Robot, since: datetime, until: datetime, size: int) -> list[dict]:
    rows = TelemetryRollup.objects.filter(robot=robot, start__gte=since, start__lt=until)
    return _summarise(rows, "start", size, Sum("count"), "{name}_{part}")


def _merge(rows: list[dict]) -> dict[int, dict]:
    merged: dict[int, dict] = {}
    for row in rows:
        into = merged.get(row["bucket"])
        if into is None:
            merged[row["bucket"]] = row
            continue
        into["samples"] += row["samples"]
        for name in METRICS:
            into[f"{name}_min"] = min(into[f"{name}_min"], row[f"{name}_min"])
            into[f"{name}_max"] = max(into[f"{name}_max"], row[f"{name}_max"])
            into[f"{name}_sum"] += row[f"{name}_sum"]
    return merged


def buckets(robot: Robot, since: datetime, until: datetime, size: int) -> list[dict]:
    """[{"start", "count", "<metric>": {"min", "avg", "max"}}] for each non-empty bucket, oldest first.

    When the bucket is a multiple of the rollup window, whole windows come from the rollups and
    only the partial windows at either end from the samples.
    """
    rows = []
    first = -(-int(since.timestamp()) // ROLLUP_SECONDS) * ROLLUP_SECONDS
    last = int(until.timestamp()) // ROLLUP_SECONDS * ROLLUP_SECONDS
    if size % ROLLUP_SECONDS == 0 and first < last:
        inner_since, inner_until = datetime.fromtimestamp(first, tz=UTC), datetime.fromtimestamp(last, tz=UTC)
        rows += _rolled_up(robot, inner_since, inner_until, size)
        if since < inner_since:
            rows += _raw(robot, since, inner_since, size)
        if inner_until < until:
            rows += _raw(robot, inner_until, until, size)
    else:
        rows = _raw(robot, since, until, size)
    return [
        {
            "start": datetime.fromtimestamp(bucket, tz=UTC),
            "count": row["samples"],
            **{
                name: {
                    "min": row[f"{name}_min"],
                    "avg": row[f"{name}_sum"] / row["samples"],
                    "max": row[f"{name}_max"],
                }
                for name in METRICS
            },
        }
        for bucket, row in sorted(_merge(rows).items())
    ]
