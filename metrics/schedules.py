"""The metrics app's Django-Q2 jobs besides the aggregation: their schedules, and the snapshot pruning.

Why a CRON schedule with a seconds field for the 30 s cadence: see docs/metrics.md.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from fleet.pruning import PRUNE_BATCH, prune_older_than
from fleet.schedules import ensure_schedule, schedules_table_exists
from metrics.models import CounterSnapshot

logger = logging.getLogger(__name__)

AGGREGATION_SCHEDULE = "aggregate_mission_metrics"
AGGREGATION_FUNC = "metrics.aggregation.aggregate_mission_metrics"
PRUNE_SCHEDULE = "prune_counter_snapshots"
PRUNE_FUNC = "metrics.schedules.prune_snapshots"

# How often Django-Q2's guard loop calls the scheduler (django_q/cluster.py: `counter >= 30`).
SCHEDULER_PASS_SECONDS = 30
_DIVISORS_OF_60 = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)


def aggregation_cron(interval: int) -> str:
    """A croniter expression (6th field = seconds) that runs the job every `interval` seconds, as near as Q2 can."""
    if interval <= SCHEDULER_PASS_SECONDS:
        # Tick at least twice per scheduler pass, so each pass has a due tick: one run per pass.
        tick = max(d for d in _DIVISORS_OF_60 if d <= max(1, interval // 2))
        return "* * * * * *" if tick == 1 else f"* * * * * */{tick}"
    # Longer intervals: whole minutes, on the minute; a pass picks each tick up within ~30 s.
    minutes = max(1, round(interval / 60))
    return f"*/{minutes} * * * * 0"


def ensure_metrics_schedules(using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate handler: the aggregation every METRICS_AGGREGATION_INTERVAL and the daily snapshot pruning."""
    from django_q.models import Schedule

    if not schedules_table_exists(using):
        return  # migrating a subset of apps that doesn't include django_q yet
    interval = settings.METRICS_AGGREGATION_INTERVAL
    if interval < SCHEDULER_PASS_SECONDS:
        logger.warning(
            "METRICS_AGGREGATION_INTERVAL=%s: Django-Q2's scheduler looks about every %s s, so runs come that often",
            interval,
            SCHEDULER_PASS_SECONDS,
        )
    ensure_schedule(
        AGGREGATION_SCHEDULE,
        AGGREGATION_FUNC,
        using=using,
        schedule_type=Schedule.CRON,
        cron=aggregation_cron(interval),
        minutes=None,
    )
    ensure_schedule(PRUNE_SCHEDULE, PRUNE_FUNC, using=using, schedule_type=Schedule.DAILY, cron=None, minutes=None)


def prune_snapshots(now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete snapshots older than METRICS_SNAPSHOT_RETENTION_DAYS; the daily job. Returns how many."""
    return prune_older_than(CounterSnapshot, "taken_at", settings.METRICS_SNAPSHOT_RETENTION_DAYS, now, batch_size)
