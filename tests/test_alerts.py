"""Alert evaluation: for_seconds, hysteresis, one raise and one clear across processes and restarts."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from fleet.redis import get_async_client
from telemetry import presence
from telemetry.alert_records import Recorder, record
from telemetry.alerts import AlertEvaluator, Rule
from telemetry.models import Alert
from telemetry.signals import alert_cleared, alert_raised

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_800_000_000.0
BATTERY_LOW = Rule(1, "battery_low", "battery_percentage", "lt", 20.0, 60.0, 25.0)
CPU_HIGH = Rule(2, "cpu_high", "cpu_usage", "gt", 90.0, 0.0, None)
NOT_REPORTING = Rule(3, "not_reporting", "reporting", "is_false", 0.0, 120.0, None)


def metrics(battery: float = 80.0, cpu: float = 10.0) -> dict[str, float]:
    return {"cpu_usage": cpu, "memory_usage": 50.0, "network_latency_ms": 5.0, "battery_percentage": battery}


def evaluator(*rules: Rule) -> AlertEvaluator:
    """A process's evaluator with these rules (as if just loaded from the database)."""
    process = AlertEvaluator()
    process.set_rules(list(rules), T0)
    return process


def kinds(transitions) -> list[tuple[str, str, str, float]]:
    return [(t.rule.name, t.robot_id, t.kind, t.value) for t in transitions]


async def test_an_alert_is_raised_once_the_condition_has_held_for_for_seconds():
    process = evaluator(BATTERY_LOW)
    assert await process.evaluate({"r2d2": metrics(battery=15)}, T0) == []
    assert await process.evaluate({"r2d2": metrics(battery=12)}, T0 + 59) == []
    [raised] = await process.evaluate({"r2d2": metrics(battery=14)}, T0 + 60)
    assert kinds([raised]) == [("battery_low", "r2d2", "raise", 14.0)]
    assert raised.peak == 12.0
    assert await process.evaluate({"r2d2": metrics(battery=10)}, T0 + 61) == []


async def test_a_condition_that_stops_holding_resets_the_wait():
    process = evaluator(BATTERY_LOW)
    await process.evaluate({"r2d2": metrics(battery=15)}, T0)
    await process.evaluate({"r2d2": metrics(battery=22)}, T0 + 30)
    assert await process.evaluate({"r2d2": metrics(battery=15)}, T0 + 61) == []
    assert kinds(await process.evaluate({"r2d2": metrics(battery=15)}, T0 + 121)) == [
        ("battery_low", "r2d2", "raise", 15.0)
    ]


async def test_a_value_hovering_between_threshold_and_clear_threshold_neither_clears_nor_raises_again():
    process = evaluator(BATTERY_LOW)
    await process.evaluate({"r2d2": metrics(battery=15)}, T0)
    await process.evaluate({"r2d2": metrics(battery=15)}, T0 + 60)
    for offset, battery in enumerate([21, 19, 24.9, 19.5, 20, 24]):
        assert await process.evaluate({"r2d2": metrics(battery=battery)}, T0 + 61 + offset) == []
    [cleared] = await process.evaluate({"r2d2": metrics(battery=25)}, T0 + 70)
    assert kinds([cleared]) == [("battery_low", "r2d2", "clear", 25.0)]
    assert cleared.threshold == 25.0
    assert cleared.peak == 15.0


async def test_without_clear_threshold_the_alert_clears_as_soon_as_the_condition_stops_holding():
    process = evaluator(CPU_HIGH)
    assert kinds(await process.evaluate({"r2d2": metrics(cpu=95)}, T0)) == [("cpu_high", "r2d2", "raise", 95.0)]
    assert kinds(await process.evaluate({"r2d2": metrics(cpu=90)}, T0 + 1)) == [("cpu_high", "r2d2", "clear", 90.0)]


async def test_two_processes_and_a_restart_raise_and_clear_exactly_once():
    first, second = evaluator(BATTERY_LOW), evaluator(BATTERY_LOW)
    decided = []
    for offset in range(0, 70, 5):
        for process in (first, second):
            decided += await process.evaluate({"r2d2": metrics(battery=10)}, T0 + offset)
    restarted = evaluator(BATTERY_LOW)
    await restarted.refresh_state()
    decided += await restarted.evaluate({"r2d2": metrics(battery=10)}, T0 + 80)
    for process in (first, second, restarted):
        decided += await process.evaluate({"r2d2": metrics(battery=30)}, T0 + 90)
    assert kinds(decided) == [("battery_low", "r2d2", "raise", 10.0), ("battery_low", "r2d2", "clear", 30.0)]


async def test_a_pending_robot_is_known_so_it_can_be_re_evaluated_without_a_new_frame():
    process = evaluator(BATTERY_LOW, CPU_HIGH)
    await process.evaluate({"r2d2": metrics(battery=15), "bb8": metrics()}, T0)
    assert process.pending_robots() == {"r2d2"}
    other = evaluator(BATTERY_LOW)
    await other.refresh_state()
    assert other.pending_robots() == {"r2d2"}


async def test_not_reporting_is_raised_for_silent_robots_and_cleared_when_they_report_again(settings):
    settings.TELEMETRY_STALE_AFTER = 30
    client = get_async_client()
    await client.zadd(presence.REPORTING, {"r2d2": T0 - 40, "bb8": T0 - 5})
    first, second = evaluator(NOT_REPORTING), evaluator(NOT_REPORTING)
    assert await first.evaluate_fleet(T0) == []
    await client.delete("telemetry:alerts:fleet_lock")
    assert await second.evaluate_fleet(T0 + 119) == []
    await client.delete("telemetry:alerts:fleet_lock")
    [raised] = await first.evaluate_fleet(T0 + 120)
    assert kinds([raised]) == [("not_reporting", "r2d2", "raise", 160.0)]
    # The lock keeps the other process out of the same tick.
    assert await second.evaluate_fleet(T0 + 120.5) == []
    await client.delete("telemetry:alerts:fleet_lock")
    await client.zadd(presence.REPORTING, {"r2d2": T0 + 125})
    assert kinds(await second.evaluate_fleet(T0 + 126)) == [("not_reporting", "r2d2", "clear", 1.0)]


@pytest.fixture
def signals():
    """Every alert signal sent, as (signal name, payload)."""
    sent = []

    def receive(signal_name):
        def receiver(sender, signal, **kwargs):
            sent.append((signal_name, kwargs))

        return receiver

    receivers = [receive("alert_raised"), receive("alert_cleared")]
    alert_raised.connect(receivers[0])
    alert_cleared.connect(receivers[1])
    yield sent
    alert_raised.disconnect(receivers[0])
    alert_cleared.disconnect(receivers[1])


async def test_recording_writes_one_alert_row_per_raise_and_closes_it_on_clear(r2d2, battery_low, signals):
    process = evaluator(Rule.of(battery_low))
    await process.evaluate({"r2d2": metrics(battery=10)}, T0)
    raised = await process.evaluate({"r2d2": metrics(battery=8)}, T0 + 60)
    assert await database_sync_to_async(record)(raised) == raised
    # Decided again after Redis lost its state: the active row stands, and nothing is sent twice.
    assert await database_sync_to_async(record)(raised) == []
    cleared = await process.evaluate({"r2d2": metrics(battery=50)}, T0 + 70)
    assert await database_sync_to_async(record)(cleared) == cleared

    alert = await database_sync_to_async(Alert.objects.get)()
    assert (alert.raised_at.timestamp(), alert.cleared_at.timestamp(), alert.value, alert.peak) == (
        T0 + 60,
        T0 + 70,
        8.0,
        8.0,
    )
    payload = {"rule": "battery_low", "robot_id": "r2d2", "metric": "battery_percentage"}
    assert signals == [
        ("alert_raised", {**payload, "value": 8.0, "threshold": 20.0, "timestamp": T0 + 60}),
        ("alert_cleared", {**payload, "value": 50.0, "threshold": 20.0, "timestamp": T0 + 70}),
    ]


async def test_the_peak_is_the_worst_value_of_the_whole_alert_whichever_process_saw_it():
    first, second = evaluator(BATTERY_LOW), evaluator(BATTERY_LOW)
    await first.evaluate({"r2d2": metrics(battery=15)}, T0)
    await first.evaluate({"r2d2": metrics(battery=12)}, T0 + 60)
    await second.refresh_state()
    for offset, battery in enumerate([14, 9, 13, 11]):
        process = (first, second)[offset % 2]
        assert await process.evaluate({"r2d2": metrics(battery=battery)}, T0 + 61 + offset) == []
    [cleared] = await first.evaluate({"r2d2": metrics(battery=30)}, T0 + 70)
    assert (cleared.kind, cleared.peak) == ("clear", 9.0)


async def test_transitions_the_database_refused_are_recorded_in_order_once_it_is_back(r2d2, battery_low, signals):
    process = evaluator(Rule.of(battery_low))
    await process.evaluate({"r2d2": metrics(battery=10)}, T0)
    raised = await process.evaluate({"r2d2": metrics(battery=8)}, T0 + 60)
    cleared = await process.evaluate({"r2d2": metrics(battery=50)}, T0 + 70)
    recorder = Recorder()
    table = Alert._meta.db_table
    await database_sync_to_async(_rename)(table, "alert_away")  # the database refuses every write to it
    try:
        recorder.add(raised)
        await recorder.drain()
        recorder.add(cleared)  # decided meanwhile: it must wait behind its raise
        await recorder.drain()
        assert [t.kind for t in recorder.unrecorded] == ["raise", "clear"]
        assert signals == []
    finally:
        await database_sync_to_async(_rename)("alert_away", table)
    recorder.retry()  # the next tick
    await recorder.drain()
    assert recorder.unrecorded == []
    assert [name for name, _ in signals] == ["alert_raised", "alert_cleared"]
    alert = await database_sync_to_async(Alert.objects.get)()
    assert (alert.raised_at.timestamp(), alert.cleared_at.timestamp()) == (T0 + 60, T0 + 70)


def _rename(table: str, to: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {connection.ops.quote_name(table)} RENAME TO {connection.ops.quote_name(to)}")
