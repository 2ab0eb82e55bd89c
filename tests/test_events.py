"""The six lifecycle events and the two alert events, bridged from Django signals onto the Redis event stream."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.db import transaction
from django.test import override_settings

from fleet.events.schema import payload_errors
from fleet.events.stream import DROPPED_KEY, get_publisher, reset_publisher
from fleet.redis import new_client
from metrics import signals as metrics_signals
from telemetry import signals as telemetry_signals
from tests.conftest import redis_server_as

STREAM = "brain:events:stream"
METRICS = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}

ALERT = {
    "rule": "battery_low",
    "robot_id": "r2d2",
    "metric": "battery_percentage",
    "value": 12.5,
    "threshold": 20.0,
    "timestamp": 1703003460.0,
}

# signal, event type, payload, expected correlation id
CASES = [
    (
        metrics_signals.aggregation_started,
        "metrics.aggregation_started",
        {"job_id": "aggregate_mission_metrics", "run_id": "run_1", "timestamp": 1703003456.5},
        "run_1",
    ),
    (
        metrics_signals.aggregation_completed,
        "metrics.aggregation_completed",
        {
            "job_id": "aggregate_mission_metrics",
            "run_id": "run_1",
            "entries_processed": 1000,
            "entries_skipped": 3,
            "duration_ms": 12.5,
            "timestamp": 1703003457.0,
            "last_id": "1703003456789-0",
        },
        "run_1",
    ),
    (
        metrics_signals.aggregation_failed,
        "metrics.aggregation_failed",
        {
            "job_id": "aggregate_mission_metrics",
            "run_id": "run_2",
            "error_message": "boom",
            "error_type": "RuntimeError",
            "timestamp": 1703003458.25,
        },
        "run_2",
    ),
    (
        telemetry_signals.connection_established,
        "telemetry.connection_established",
        {"robot_id": "r2d2", "connection_id": "ws_r2d2_1703003456789_9f8e", "timestamp": 1703003456.789},
        "ws_r2d2_1703003456789_9f8e",
    ),
    (
        telemetry_signals.connection_closed,
        "telemetry.connection_closed",
        {
            "robot_id": "r2d2",
            "connection_id": "ws_r2d2_1703003456789_9f8e",
            "duration_seconds": 61.5,
            "reason": "idle_timeout",
            "close_code": 4000,
            "timestamp": 1703003518.289,
        },
        "ws_r2d2_1703003456789_9f8e",
    ),
    (
        telemetry_signals.metrics_published,
        "telemetry.metrics_published",
        {"robot_id": "r2d2", "metrics": METRICS, "timestamp": 1703003460.0},
        None,
    ),
    (
        telemetry_signals.alert_raised,
        "telemetry.alert_raised",
        ALERT,
        None,
    ),
    (
        telemetry_signals.alert_cleared,
        "telemetry.alert_cleared",
        {**ALERT, "value": 26.0, "threshold": 25.0, "timestamp": 1703003520.0},
        None,
    ),
]


@pytest.fixture(autouse=True)
def publisher():
    reset_publisher()
    yield get_publisher()
    reset_publisher()


def stream_entries(client=None) -> list[tuple[str, dict]]:
    client = client or new_client()
    return [(fields[b"type"].decode(), json.loads(fields[b"data"])) for _, fields in client.xrange(STREAM)]


@pytest.mark.django_db
@pytest.mark.parametrize(("signal", "event_type", "payload", "correlation_id"), CASES, ids=[c[1] for c in CASES])
def test_each_signal_puts_exactly_one_envelope_on_the_stream(
    signal, event_type, payload, correlation_id, publisher, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        signal.send(sender=None, **payload)
    assert publisher.flush(timeout=5)

    entries = stream_entries()
    assert len(entries) == 1
    entry_type, envelope = entries[0]
    assert entry_type == event_type
    assert set(envelope) == {"id", "type", "source", "target", "timestamp", "payload", "meta"}
    module = event_type.split(".")[0]
    assert re.fullmatch(rf"evt_{module}_\d{{13}}_[0-9a-f]{{6}}", envelope["id"])
    assert envelope["type"] == event_type
    assert envelope["source"] == f"{module}_service"
    assert envelope["target"] is None
    assert isinstance(envelope["timestamp"], float)
    assert envelope["payload"] == payload
    assert payload_errors(event_type, envelope["payload"]) == []
    assert envelope["meta"] == {
        "correlation_id": correlation_id,
        "version": "1.0",
        "schema_version": 1,
        "producer": "fleet",
        "source_module": module,
    }


@pytest.mark.django_db
def test_extra_signal_arguments_stay_out_of_the_payload(publisher, django_capture_on_commit_callbacks):
    payload = {"robot_id": "r2d2", "metrics": METRICS, "timestamp": 1703003460.0}
    with django_capture_on_commit_callbacks(execute=True):
        telemetry_signals.metrics_published.send(sender=None, connection_id="ws_r2d2_1_abcd", **payload)
    publisher.flush(timeout=5)
    [(_, envelope)] = stream_entries()
    assert envelope["payload"] == payload
    assert envelope["meta"]["correlation_id"] == "ws_r2d2_1_abcd"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_publishes_nothing(publisher):
    with pytest.raises(RuntimeError), transaction.atomic():
        metrics_signals.aggregation_started.send(sender=None, **CASES[0][2])
        raise RuntimeError("roll back")
    metrics_signals.aggregation_failed.send(sender=None, **CASES[2][2])
    assert publisher.flush(timeout=5)
    assert [entry_type for entry_type, _ in stream_entries()] == ["metrics.aggregation_failed"]


@pytest.mark.django_db(transaction=True)
def test_events_arrive_in_the_order_their_signals_were_sent(publisher):
    for n in range(1200):
        payload = {**CASES[3][2], "connection_id": f"ws_r2d2_{n}"}
        telemetry_signals.connection_established.send(sender=None, **payload)
    assert publisher.flush(timeout=10)
    ids = [envelope["payload"]["connection_id"] for _, envelope in stream_entries()]
    assert ids == [f"ws_r2d2_{n}" for n in range(1200)]
    assert len({envelope["id"] for _, envelope in stream_entries()}) == 1200


def test_a_publish_that_fails_is_logged_not_raised(publisher, caplog):
    # A missing payload field: the sender carries on, the error is logged.
    telemetry_signals.connection_established.send(sender=None, robot_id="r2d2")
    assert "could not publish telemetry.connection_established" in caplog.text
    assert publisher.flush(timeout=5)
    assert stream_entries() == []


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of the test's own that keeps its data, so the test can stop and restart it."""
    with redis_server_as("REDIS_URL", tmp_path / "redis", persist=True) as server:
        yield server


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def send_established(first: int, last: int) -> None:
    for n in range(first, last):
        telemetry_signals.connection_established.send(
            sender=None, robot_id="r2d2", connection_id=f"ws_r2d2_{n}", timestamp=float(n)
        )


async def test_async_senders_buffer_while_redis_is_down_and_delivery_resumes_in_order(private_redis):
    send_established(0, 10)
    publisher = get_publisher()
    assert publisher.flush(timeout=5)

    private_redis.stop()
    # In a running event loop the bridge hands envelopes straight to the buffer: the sender
    # never awaits, and nothing can reach Redis while it is down.
    send_established(10, 40)
    wait_until(lambda: publisher.pending() == 30)

    private_redis.start()
    assert publisher.flush(timeout=10)
    client = new_client(socket_timeout=5)
    ids = [envelope["payload"]["connection_id"] for _, envelope in stream_entries(client)]
    assert ids == [f"ws_r2d2_{n}" for n in range(40)]
    assert client.get(DROPPED_KEY) is None


async def test_overflow_during_an_outage_drops_the_oldest_and_counts_them_exactly(private_redis, caplog):
    with override_settings(FLEET_EVENT_BUFFER=50):
        reset_publisher()
        publisher = get_publisher()
        send_established(0, 5)
        assert publisher.flush(timeout=5)

        private_redis.stop()
        send_established(5, 85)
        # Once the publisher's failed send is back in the buffer, exactly the capacity is left.
        wait_until(lambda: publisher.pending() == 50)
        assert publisher.dropped == 30

        private_redis.start()
        assert publisher.flush(timeout=10)
    client = new_client(socket_timeout=5)
    ids = [envelope["payload"]["connection_id"] for _, envelope in stream_entries(client)]
    assert ids == [f"ws_r2d2_{n}" for n in [*range(5), *range(35, 85)]]
    assert int(client.get(DROPPED_KEY)) == 30
    assert caplog.text.count("event buffer full") == 1
