"""The aggregation's Django-Q2 schedule: idempotent, and a real qcluster runs it about every 30 s."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from django_q.models import Schedule, Task

from metrics.models import Counter, CounterSnapshot
from metrics.schedules import (
    AGGREGATION_FUNC,
    AGGREGATION_SCHEDULE,
    PRUNE_FUNC,
    PRUNE_SCHEDULE,
    aggregation_cron,
    ensure_metrics_schedules,
    prune_snapshots,
)
from tests.conftest import add_to_counter
from tests.servers import ServerProcess, child_env


@pytest.mark.django_db
def test_migrating_twice_leaves_one_schedule_of_each():
    call_command("migrate", interactive=False, verbosity=0)
    call_command("migrate", interactive=False, verbosity=0)

    aggregation = Schedule.objects.get(name=AGGREGATION_SCHEDULE)
    prune = Schedule.objects.get(name=PRUNE_SCHEDULE)
    assert (aggregation.func, aggregation.schedule_type, aggregation.cron, aggregation.repeats) == (
        AGGREGATION_FUNC,
        Schedule.CRON,
        "* * * * * */15",
        -1,
    )
    assert (prune.func, prune.schedule_type, prune.repeats) == (PRUNE_FUNC, Schedule.DAILY, -1)


@pytest.mark.django_db
def test_it_updates_the_schedule_when_the_interval_changes_and_removes_duplicates():
    Schedule.objects.create(name=AGGREGATION_SCHEDULE, func=AGGREGATION_FUNC, schedule_type=Schedule.MINUTES)

    with override_settings(METRICS_AGGREGATION_INTERVAL=120):
        ensure_metrics_schedules()

    assert list(Schedule.objects.filter(name=AGGREGATION_SCHEDULE).values_list("schedule_type", "cron")) == [
        (Schedule.CRON, "*/2 * * * * 0")
    ]


def test_the_cron_ticks_at_least_twice_per_scheduler_pass_up_to_30_s_then_whole_minutes():
    assert aggregation_cron(30) == "* * * * * */15"
    assert aggregation_cron(20) == "* * * * * */10"
    assert aggregation_cron(10) == "* * * * * */5"
    assert aggregation_cron(1) == "* * * * * *"
    assert aggregation_cron(60) == "*/1 * * * * 0"
    assert aggregation_cron(45) == "*/1 * * * * 0"
    assert aggregation_cron(300) == "*/5 * * * * 0"


@pytest.mark.django_db(transaction=True)  # the scheduler closes old connections, as it does in the cluster
def test_runs_missed_during_downtime_do_not_replay_as_a_burst():
    from django_q.brokers import get_broker
    from django_q.scheduler import scheduler

    ensure_metrics_schedules()
    now = timezone.now()
    Schedule.objects.exclude(name=AGGREGATION_SCHEDULE).update(next_run=now + timedelta(days=1))
    # Down for an hour: 240 ticks of 15 s were missed.
    Schedule.objects.filter(name=AGGREGATION_SCHEDULE).update(next_run=now - timedelta(hours=1))
    broker = get_broker()
    broker.purge_queue()

    scheduler(broker=broker)

    assert broker.queue_size() == 1
    schedule = Schedule.objects.get(name=AGGREGATION_SCHEDULE)
    assert now < schedule.next_run <= timezone.now() + timedelta(seconds=15)
    broker.purge_queue()


@pytest.mark.django_db
@override_settings(METRICS_SNAPSHOT_RETENTION_DAYS=90)
def test_pruning_deletes_snapshots_older_than_the_retention():
    add_to_counter("a_total")
    counter = Counter.objects.get()
    now = timezone.now()
    for age in (91, 89, 1):
        CounterSnapshot.objects.create(counter=counter, value=1, taken_at=now - timedelta(days=age))

    assert prune_snapshots() == 1
    assert CounterSnapshot.objects.count() == 2


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_qcluster_runs_the_aggregation_about_every_30_seconds(tmp_path):
    """Three runs, each 27-36 s after the previous.

    The scheduler pass is 60 guard-loop sleeps of 0.5 s plus the loop's own work: never under 30 s,
    a little over it on a busy machine. Worker pick-up adds well under a second of jitter to each
    start, so 27 s is a safe floor; a skipped pass would show as ~60 s, which 36 s rules out.
    """
    ensure_metrics_schedules()
    Schedule.objects.filter(name=AGGREGATION_SCHEDULE).update(next_run=timezone.now())
    cluster = ServerProcess([sys.executable, "manage.py", "qcluster"], child_env(Q_WORKERS="1"), tmp_path / "q.log")
    try:
        deadline = time.monotonic() + 150
        starts: list = []
        while time.monotonic() < deadline and len(starts) < 3:
            assert cluster.process.poll() is None, cluster.output()
            starts = list(
                Task.objects.filter(func=AGGREGATION_FUNC).order_by("started").values_list("started", flat=True)
            )
            time.sleep(1)
    finally:
        cluster.stop()

    assert len(starts) >= 3, cluster.output()
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:], strict=False)]
    print(f"aggregation runs started {[round(gap, 2) for gap in gaps]} s apart")
    assert all(27 <= gap <= 36 for gap in gaps), (gaps, cluster.output())
    assert Task.objects.filter(func=AGGREGATION_FUNC, success=True).count() == len(starts)
