"""The history write: one transaction per flush, in which one bad row never sinks the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from telemetry.history import DbBatch, HistoryWriter
from telemetry.models import RobotSession, TelemetrySample
from telemetry.robots import create_robot

pytestmark = pytest.mark.django_db(transaction=True)

METRICS = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_a_row_that_fails_to_insert_is_skipped_and_the_rest_of_its_batch_is_stored(r2d2, caplog):
    bb8, _ = await asyncio.to_thread(create_robot, "bb8")
    # A connection id that is already taken: its insert fails on the unique constraint.
    await asyncio.to_thread(RobotSession.objects.create, connection_id="ws_r2d2_taken", robot=r2d2, connected_at=NOW)
    batch = DbBatch()
    batch.open_session("ws_r2d2_taken", r2d2.pk, NOW.timestamp())
    batch.open_session("ws_bb8_fresh", bb8.pk, NOW.timestamp())
    batch.samples += [TelemetrySample(robot_id=robot.pk, reported_at=NOW, seq=1, **METRICS) for robot in (r2d2, bb8)]
    waiter = asyncio.get_running_loop().create_future()
    batch.waiters[waiter] = batch.samples[:]

    await HistoryWriter().start(batch, 0.0)

    assert waiter.result() is None  # the backfill that waited on this batch, all of it stored, gets its ack
    sessions = await asyncio.to_thread(lambda: sorted(RobotSession.objects.values_list("connection_id", "robot_id")))
    assert sessions == [("ws_bb8_fresh", bb8.pk), ("ws_r2d2_taken", r2d2.pk)]
    assert await asyncio.to_thread(TelemetrySample.objects.count) == 2
    assert "skipped a RobotSession row that could not be inserted" in caplog.text
