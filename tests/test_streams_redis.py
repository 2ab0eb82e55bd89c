"""FLEET_STREAMS_REDIS_URL: the event and mission streams on a Redis of their own, the live path's keys on REDIS_URL."""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings
from django.db import transaction

from fleet.events.stream import get_publisher
from fleet.redis import get_client
from metrics.aggregation import aggregate_mission_metrics
from telemetry import signals as telemetry_signals
from tests.conftest import counter_value, redis_server_as

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def streams_redis(tmp_path):
    with redis_server_as("FLEET_STREAMS_REDIS_URL", tmp_path / "streams-redis") as server:
        yield server


def test_events_and_missions_go_through_the_streams_redis_and_nothing_else_does(streams_redis, client, admin_user):
    streams = redis.Redis.from_url(streams_redis.url, socket_timeout=5)
    main = get_client()

    with transaction.atomic():
        telemetry_signals.connection_established.send(
            sender=None, robot_id="r2d2", connection_id="ws_r2d2_1", timestamp=1703003456.0
        )
    assert get_publisher().flush(timeout=5)
    [(_, fields)] = streams.xrange(settings.FLEET_EVENT_STREAM)
    assert fields[b"type"] == b"telemetry.connection_established"
    assert not main.exists(settings.FLEET_EVENT_STREAM)

    client.force_login(admin_user)
    [event] = client.get("/api/events/").json()["results"]
    assert event["payload"]["connection_id"] == "ws_r2d2_1"

    streams.xadd(settings.FLEET_MISSION_STREAM, {"data": json.dumps({"mission_id": "m-1", "status": "completed"})})
    main.xadd(settings.FLEET_MISSION_STREAM, {"data": json.dumps({"mission_id": "m-2", "status": "failed"})})
    assert aggregate_mission_metrics().entries_processed == 1
    assert counter_value("mission_status_total", {"status": "completed"}) == 1
    assert counter_value("mission_status_total", {"status": "failed"}) == 0


def test_healthz_checks_the_streams_redis_when_it_is_apart(streams_redis, client):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "redis": "ok", "streams_redis": "ok"}
    streams_redis.stop()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "redis": "ok", "streams_redis": "error"}
