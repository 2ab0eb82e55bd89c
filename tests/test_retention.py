"""Retention of telemetry history: the daily prune and its Django-Q2 schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_q.models import Schedule

from telemetry.history import SCHEDULE_NAME, ensure_schedule, prune_samples
from telemetry.models import TelemetrySample

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
METRICS = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


def add_samples(robot, *ages: timedelta) -> None:
    TelemetrySample.objects.bulk_create(
        TelemetrySample(robot=robot, reported_at=NOW - age, seq=i, **METRICS) for i, age in enumerate(ages)
    )


def remaining_ages(robot) -> list[timedelta]:
    return [NOW - sample.reported_at for sample in TelemetrySample.objects.filter(robot=robot).order_by("reported_at")]


def test_it_deletes_exactly_the_samples_older_than_the_retention(r2d2):
    day = timedelta(days=1)
    second = timedelta(seconds=1)
    add_samples(r2d2, 400 * day, 30 * day + second, 30 * day, 30 * day - second, day, timedelta(0))

    deleted = prune_samples(now=NOW)

    assert deleted == 2
    assert remaining_ages(r2d2) == [30 * day, 30 * day - second, day, timedelta(0)]


@override_settings(TELEMETRY_RETENTION_DAYS=7)
def test_it_follows_telemetry_retention_days(r2d2):
    add_samples(r2d2, timedelta(days=8), timedelta(days=6))

    assert prune_samples(now=NOW) == 1
    assert remaining_ages(r2d2) == [timedelta(days=6)]


def test_it_deletes_in_batches_until_nothing_old_is_left(r2d2):
    add_samples(r2d2, *[timedelta(days=31, minutes=i) for i in range(25)], timedelta(days=1))

    assert prune_samples(now=NOW, batch_size=10) == 25
    assert remaining_ages(r2d2) == [timedelta(days=1)]


def test_a_second_prune_finds_nothing(r2d2):
    add_samples(r2d2, timedelta(days=31))
    prune_samples(now=NOW)

    assert prune_samples(now=NOW) == 0


def test_migrating_registers_one_daily_prune_schedule_however_often_it_runs():
    call_command("migrate", interactive=False, verbosity=0)
    call_command("migrate", interactive=False, verbosity=0)
    ensure_schedule()

    schedules = Schedule.objects.filter(name=SCHEDULE_NAME)
    assert schedules.count() == 1
    schedule = schedules.get()
    assert schedule.func == "telemetry.history.prune_samples"
    assert schedule.schedule_type == Schedule.DAILY
    assert schedule.repeats == -1


def test_re_registering_keeps_the_next_run_the_scheduler_has_set():
    ensure_schedule()
    later = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    Schedule.objects.filter(name=SCHEDULE_NAME).update(next_run=later)

    ensure_schedule()

    assert Schedule.objects.get(name=SCHEDULE_NAME).next_run == later


def test_the_scheduled_function_runs_by_its_dotted_path(r2d2):
    from django.utils.module_loading import import_string

    add_samples(r2d2, timedelta(days=400))
    func = import_string(Schedule.objects.get(name=SCHEDULE_NAME).func)

    assert func() == 1
