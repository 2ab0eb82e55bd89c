"""Exactly-once aggregation of the mission status stream into counters.

The stream position that was counted (the cursor) lives in the database and moves in the same
transaction as the counters, so every entry is counted once whatever crashes or overlapping runs
happen (docs/metrics.md explains the locking on PostgreSQL and SQLite).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter as Tally
from dataclasses import dataclass, field

import redis as redis_lib
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from fleet.cluster import stop_requested
from fleet.redis import STREAMS, get_client
from metrics.counters import (
    MISSION_ENTRIES_INVALID,
    MISSION_ENTRIES_LOST,
    MISSION_STATUS,
    counter_key,
    inc_counters,
    snapshot_counters,
)
from metrics.entries import tally
from metrics.models import Counter, JobRuns, StreamCursor
from metrics.signals import aggregation_completed, aggregation_failed, aggregation_started

logger = logging.getLogger(__name__)

JOB_ID = "aggregate_mission_metrics"
START = "0-0"


@dataclass
class Gap:
    """Entries trimmed from the stream after the cursor, before they were counted."""

    after_id: str
    first_id: str
    lost: int | None  # None when the server cannot tell (Redis < 7)

    def describe(self) -> str:
        where = f"stream trimmed past the cursor: entries after {self.after_id} and before {self.first_id}"
        if self.lost is None:
            return f"{where} may have been lost: count unknown (Redis < 7)"
        return f"{where}: {self.lost} entries lost"


@dataclass
class RunResult:
    run_id: str
    entries_processed: int = 0
    entries_skipped: int = 0
    entries_lost: int = 0
    last_id: str | None = None
    duration_ms: float = 0.0
    counters_changed: list[int] = field(default_factory=list)
    # The changed counters' new values, {"name", "labels", "value"}, ordered by name and labels.
    counters: list[dict] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    interrupted: bool = False  # the cluster is stopping: the next run carries on from the cursor

    def summary(self) -> str:
        lost = f", {self.entries_lost} lost" if self.entries_lost else ""
        gaps = f", {len(self.gaps)} gap(s) in the stream" if self.gaps else ""
        interrupted = "; stopped early, the service is stopping" if self.interrupted else ""
        return (
            f"aggregated {self.entries_processed} entries ({self.entries_skipped} skipped{lost}{gaps}) "
            f"in {self.duration_ms:.1f} ms; {len(self.counters_changed)} "
            f"counter{'' if len(self.counters_changed) == 1 else 's'} changed; "
            f"cursor at {self.last_id or 'the start'}{interrupted}"
        )


def aggregate_mission_metrics(redis=None, batch_size: int | None = None, max_entries: int | None = None) -> RunResult:
    """Count new mission stream entries into counters; the Django-Q2 job. Sends the three lifecycle signals."""
    run_id = f"agg_{int(time.time() * 1000)}_{secrets.token_hex(3)}"
    started = time.perf_counter()
    aggregation_started.send(sender=aggregate_mission_metrics, job_id=JOB_ID, run_id=run_id, timestamp=time.time())
    try:
        result = _run(
            redis or get_client(STREAMS),
            settings.FLEET_MISSION_STREAM,
            run_id,
            batch_size or settings.METRICS_AGGREGATION_BATCH,
            max_entries or settings.METRICS_AGGREGATION_MAX_PER_RUN,
        )
    except Exception as exc:
        _count_run("failed", time.perf_counter() - started)
        aggregation_failed.send(
            sender=aggregate_mission_metrics,
            job_id=JOB_ID,
            run_id=run_id,
            error_message=str(exc),
            error_type=type(exc).__name__,
            timestamp=time.time(),
        )
        raise  # so that Django-Q2 records the failure
    result.duration_ms = (time.perf_counter() - started) * 1000
    _count_run("completed", result.duration_ms / 1000)
    if result.entries_processed:
        logger.info("%s: %s", run_id, result.summary())
    aggregation_completed.send(
        sender=aggregate_mission_metrics,
        job_id=JOB_ID,
        run_id=run_id,
        entries_processed=result.entries_processed,
        entries_skipped=result.entries_skipped,
        duration_ms=result.duration_ms,
        timestamp=time.time(),
        last_id=result.last_id,
        counters=result.counters,
    )
    return result


def _count_run(result: str, duration: float) -> None:
    """One UPDATE (an INSERT the first time): the figures /metrics reads for a job no scrape reaches."""
    fields = {
        result: F(result) + 1,
        "last_duration_seconds": duration,
        "last_finished_at": timezone.now(),
    }
    try:
        if not JobRuns.objects.filter(job_id=JOB_ID).update(**fields):
            JobRuns.objects.get_or_create(job_id=JOB_ID)
            JobRuns.objects.filter(job_id=JOB_ID).update(**fields)
    except Exception:
        # A run must not fail, or hide why it failed, because its figures could not be written.
        logger.exception("could not record the run of %s", JOB_ID)


def _run(client: redis_lib.Redis, stream: str, run_id: str, batch_size: int, max_entries: int) -> RunResult:
    result = RunResult(run_id=run_id)
    row = StreamCursor.objects.filter(stream=stream).values_list("last_id", "position").first()
    cursor, position = row if row else (START, 0)
    result.last_id = None if cursor == START else cursor
    # The idle path: one cheap call, no database writes.
    if not client.xrange(stream, f"({cursor}", "+", count=1):
        return result
    if row is None:
        # Concurrent first runs may both get here; the unique stream name keeps one row.
        StreamCursor.objects.bulk_create([StreamCursor(stream=stream)], ignore_conflicts=True)
    data_key = "data" if client.get_connection_kwargs().get("decode_responses") else b"data"
    changed: set[int] = set()
    notes: dict[int, str] = {}
    remaining = max_entries
    while remaining > 0:
        entries, info = _read(client, stream, cursor, min(batch_size, remaining))
        if not entries:
            break
        gap = _find_gap(cursor, position, info)
        statuses, invalid = tally(entries, data_key)
        last_id = _decode(entries[-1][0])
        new_position = _position_after(position, gap, len(entries), last_id, info)
        committed = _commit_batch(stream, cursor, last_id, new_position, statuses, invalid, gap, changed, notes)
        if committed is not None:
            # Another run counted from here first: carry on from where it left the cursor.
            cursor, position = committed
            continue
        cursor, position = last_id, new_position
        result.entries_processed += len(entries)
        result.entries_skipped += invalid
        remaining -= len(entries)
        if gap is not None:
            result.gaps.append(gap)
            result.entries_lost += gap.lost or 0
        if len(entries) < batch_size:
            break
        if stop_requested():
            # Every batch is committed with its cursor, so stopping between two loses nothing.
            result.interrupted = True
            break
    result.last_id = None if cursor == START else cursor
    if changed:
        snapshot_counters(changed, notes=notes, run_id=run_id)
        rows = Counter.objects.filter(id__in=changed).values("name", "labels", "value")
        result.counters = sorted(rows, key=lambda row: (row["name"], sorted(row["labels"].items())))
    result.counters_changed = sorted(changed)
    return result


def _read(client: redis_lib.Redis, stream: str, cursor: str, count: int) -> tuple[list, dict | None]:
    """A batch after the cursor and the stream's XINFO, atomically (MULTI), so a gap is measured exactly."""
    pipe = client.pipeline(transaction=True)
    # Raw XRANGE replies: redis-py would build a dict per entry, a third of the read's cost.
    pipe.response_callbacks = _raw_xrange_callbacks(client)
    pipe.xrange(stream, f"({cursor}", "+", count=count)
    pipe.xinfo_stream(stream)
    entries, info = pipe.execute(raise_on_error=False)
    if isinstance(entries, Exception):
        raise entries
    # XINFO fails only when the key vanished between calls; then there is nothing to compare with.
    return entries, None if isinstance(info, Exception) else info


def _raw_xrange_callbacks(client: redis_lib.Redis):
    callbacks = client.response_callbacks.copy()
    callbacks.pop("XRANGE", None)
    return callbacks


def _find_gap(cursor: str, position: int | None, info: dict | None) -> Gap | None:
    """Were entries after the cursor trimmed before we read them?"""
    if not info or not info.get("first-entry"):
        return None
    first_id = _decode(info["first-entry"][0])
    if parse_id(first_id) <= parse_id(cursor):
        return None  # the stream still reaches back to the cursor: nothing uncounted is missing
    entries_added = info.get("entries-added")
    if entries_added is not None and position is not None:
        # Redis 7. Its max-deleted-entry-id only follows XDEL, not trimming, so count instead: every
        # entry still in the stream is after the cursor, so the rest of those added after it are gone.
        lost = int(entries_added) - position - int(info["length"])
        if lost == 0:
            return None  # only entries we had already counted were trimmed
        return Gap(cursor, first_id, lost if lost > 0 else None)
    if cursor == START:
        return None  # Redis < 7 from the very start: nothing that was ours to lose is known
    # Redis < 7 can't tell "trimmed up to the cursor" from "trimmed past it": flag it as possible.
    return Gap(cursor, first_id, None)


def _position_after(position: int | None, gap: Gap | None, count: int, last_id: str, info: dict | None) -> int | None:
    """Entries ever added up to last_id, when known (used to compute lost entries on Redis 7)."""
    if info and info.get("entries-added") is not None and _decode(info.get("last-generated-id") or b"") == last_id:
        return int(info["entries-added"])  # we reached the end of the stream: exact, whatever happened before
    if position is None or gap is not None and gap.lost is None:
        return None
    return position + count + (gap.lost if gap else 0)


def _commit_batch(
    stream: str,
    read_from: str,
    last_id: str,
    position: int | None,
    statuses: Tally,
    invalid: int,
    gap: Gap | None,
    changed: set[int],
    notes: dict[int, str],
) -> tuple[str, int | None] | None:
    """Apply one batch and advance the cursor, or return the cursor another run moved it to."""
    with transaction.atomic():
        # FOR UPDATE on PostgreSQL; on SQLite the IMMEDIATE transaction already holds the write lock.
        row = StreamCursor.objects.select_for_update().get(stream=stream)
        if row.last_id != read_from:
            return row.last_id, row.position
        deltas = {counter_key(MISSION_STATUS, {"status": status}): n for status, n in statuses.items()}
        if invalid:
            deltas[counter_key(MISSION_ENTRIES_INVALID)] = invalid
        if gap is not None:
            logger.warning("%s: %s", stream, gap.describe())
            if gap.lost:
                deltas[counter_key(MISSION_ENTRIES_LOST)] = gap.lost
            lost_id = _ensure_counter(MISSION_ENTRIES_LOST)
            notes[lost_id] = (notes.get(lost_id, "") + "; " + gap.describe()).strip("; ")[:500]
            changed.add(lost_id)
        changed.update(inc_counters(deltas))
        row.last_id = last_id
        row.position = position
        row.save(update_fields=["last_id", "position", "updated_at"])
    return None


def _ensure_counter(name: str) -> int:
    Counter.objects.bulk_create([Counter(name=name, labels={}, updated_at=timezone.now())], ignore_conflicts=True)
    return Counter.objects.filter(name=name, labels={}).values_list("id", flat=True).get()


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
