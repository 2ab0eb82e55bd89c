"""The Django-Q2 schedules of the metrics app, created idempotently after every migrate.

Why a CRON schedule with a seconds field for the 30 s cadence (see docs/metrics.md for the
full reasoning): Django-Q2's interval schedules stop at one minute, and its scheduler only
looks at due schedules once per guard-loop pass of about 30 s (60 sleeps of 0.5 s plus the
loop's own work, so never less than 30 s). A cron tick every 15 s means every scheduler pass
finds at least one tick since the previous run, whatever the phase between the two clocks,
so the job runs once per pass: about every 30 s, never with a skipped pass (a 60 s gap).
`catch_up=False` in Q_CLUSTER collapses the ticks missed between passes (or during downtime)
into that single run.

The schedules are written with fleet.schedules.ensure_schedule, like every app's.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from fleet.schedules import ensure_schedule, schedules_table_exists

logger = logging.getLogger(__name__)

AGGREGATION_SCHEDULE = "aggregate_mission_metrics"
AGGREGATION_FUNC = "metrics.aggregation.aggregate_mission_metrics"
PRUNE_SCHEDULE = "prune_counter_snapshots"
PRUNE_FUNC = "metrics.pruning.prune_snapshots"

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
