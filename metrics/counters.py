"""Counters every process can increment and read: one atomic upsert per label set, and their snapshots."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from django.db import connections, router
from django.utils import timezone

from metrics.models import Counter, CounterSnapshot

# Counters of the mission aggregation; /metrics always exposes them, even before their first increment.
MISSION_STATUS = "mission_status_total"
MISSION_ENTRIES_INVALID = "mission_entries_invalid_total"
MISSION_ENTRIES_LOST = "mission_entries_lost_total"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelKey = tuple[tuple[str, str], ...]


def canonical_labels(labels: Mapping[str, object] | None) -> dict[str, str]:
    """Labels as stored: string values, keys in sorted order, so equal label sets are equal rows."""
    if not labels:
        return {}
    for key in labels:
        if not isinstance(key, str) or not _LABEL.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r}")
    return {key: str(labels[key]) for key in sorted(labels)}


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"invalid counter name {name!r}")


def inc_counters(deltas: Mapping[tuple[str, LabelKey], int], using: str | None = None) -> list[int]:
    """Add many deltas in one statement (one row per distinct label set); returns the ids of the counters changed.

    INSERT ... ON CONFLICT DO UPDATE SET value = value + excluded.value is a single atomic
    statement on both SQLite (3.24+) and PostgreSQL: no read-modify-write race between processes.
    """
    rows = []
    for (name, label_items), amount in sorted(deltas.items()):
        if amount < 0:
            raise ValueError(f"counters only go up; got {amount} for {name}")
        if amount:
            _check_name(name)
            rows.append((name, canonical_labels(dict(label_items)), amount))
    if not rows:
        return []
    using = using or router.db_for_write(Counter)
    connection = connections[using]
    labels_field = Counter._meta.get_field("labels")
    now = Counter._meta.get_field("updated_at").get_db_prep_save(timezone.now(), connection)
    table = connection.ops.quote_name(Counter._meta.db_table)
    params: list[object] = []
    for name, labels, amount in rows:
        params += [name, labels_field.get_db_prep_save(labels, connection), amount, now]
    # Rows are sorted, so two concurrent statements lock the same rows in the same order (no deadlock).
    sql = (
        f"INSERT INTO {table} (name, labels, value, updated_at) VALUES "
        + ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        + f" ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + excluded.value,"
        " updated_at = excluded.updated_at RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def counter_key(name: str, labels: Mapping[str, object] | None = None) -> tuple[str, LabelKey]:
    """The key `inc_counters` takes for one label set."""
    return name, tuple(canonical_labels(labels).items())


def snapshot_counters(counter_ids: Iterable[int], notes: Mapping[int, str] | None = None, run_id: str = "") -> int:
    """Record the current value of each counter; a counter with a note is flagged as a gap."""
    ids = sorted(set(counter_ids))
    if not ids:
        return 0
    notes = notes or {}
    now = timezone.now()
    values = Counter.objects.filter(id__in=ids).values_list("id", "value")
    snapshots = [
        CounterSnapshot(
            counter_id=counter_id,
            value=value,
            taken_at=now,
            gap=counter_id in notes,
            note=notes.get(counter_id, ""),
            run_id=run_id,
        )
        for counter_id, value in values
    ]
    CounterSnapshot.objects.bulk_create(snapshots)
    return len(snapshots)
