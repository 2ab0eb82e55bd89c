"""Django-Q2 schedules that apps create idempotently from their post_migrate handlers."""

from __future__ import annotations

import logging

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

logger = logging.getLogger(__name__)


def schedules_table_exists(using: str = DEFAULT_DB_ALIAS) -> bool:
    """False while django_q is not migrated yet (e.g. `migrate metrics` alone)."""
    from django_q.models import Schedule

    return Schedule._meta.db_table in connections[using].introspection.table_names()


def ensure_schedule(name: str, func: str, using: str = DEFAULT_DB_ALIAS, **fields) -> None:
    """Create or update the one schedule called `name`; running it twice changes nothing."""
    from django_q.models import Schedule

    fields = {"func": func, "repeats": -1, **fields}
    schedules = list(Schedule.objects.using(using).filter(name=name).order_by("id"))
    if not schedules:
        Schedule.objects.using(using).create(name=name, **fields)
        logger.info("created schedule %s", name)
        return
    schedule, duplicates = schedules[0], schedules[1:]
    for duplicate in duplicates:
        duplicate.delete()
    changed = {key: value for key, value in fields.items() if getattr(schedule, key) != value}
    if not changed:
        return
    for key, value in changed.items():
        setattr(schedule, key, value)
    if {"cron", "schedule_type", "minutes"} & changed.keys():
        schedule.next_run = timezone.now()
    schedule.save(using=using)
    logger.info("updated schedule %s: %s", name, ", ".join(sorted(changed)))
