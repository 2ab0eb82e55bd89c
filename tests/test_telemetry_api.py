"""The telemetry REST API against a real database and a real Redis (presence and latest values)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from django.core.cache import cache
from django.db import connections
from django.test import override_settings
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.fields import DateTimeField
from rest_framework.throttling import AnonRateThrottle

import fleet
from fleet.redis import reset_clients
from telemetry import latest, presence, signals
from telemetry.models import TelemetrySample
from telemetry.robots import create_robot
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.django_db

FEATURES = [
    "robot_websocket",
    "token_auth",
    "telemetry_backfill",
    "fleet_presence",
    "latest_metrics",
    "telemetry_history",
    "lifecycle_events",
    "mission_metrics",
    "prometheus",
]
METRICS = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


@pytest.fixture(autouse=True)
def fresh_throttle():
    # Anonymous throttle counts live in the per-process cache: start each test from zero.
    cache.clear()


@pytest.fixture
def bb8():
    robot, _ = create_robot("bb8", name="Rolling")
    return robot


@pytest.fixture
def api(client, operator):
    client.force_login(operator)
    return client


def connect(redis_client, robot_id: str, connection_id: str) -> None:
    """Take a live lease the way a connected socket does."""
    pipe = redis_client.pipeline(transaction=False)
    presence.refresh_leases(pipe, [(connection_id, robot_id)])
    pipe.execute()


def report(redis_client, robot_id: str, metrics: dict, reported_at: float, seq: int | None) -> None:
    """Store an accepted frame's latest values and mark the robot reporting, as the ingest flusher does."""
    pipe = redis_client.pipeline(transaction=False)
    latest.write_latest(pipe, {robot_id: latest.encode(metrics, reported_at, seq)})
    presence.mark_reporting(pipe, {robot_id: time.time()})
    pipe.execute()


@pytest.fixture
def redis_unreachable():
    """Point every Redis client at a closed port: connections are refused."""
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        reset_clients()
        yield
    reset_clients()


@pytest.fixture
def redis_hung(redis_client):
    """Pause every Redis client for a moment (CLIENT PAUSE ... ALL), then wait until it answers again."""
    pause_ms = 6000  # twice the budget the tests give a request, so waiting it out fails them
    redis_client.execute_command("CLIENT", "PAUSE", pause_ms, "ALL")
    ends = time.monotonic() + pause_ms / 1000
    yield
    time.sleep(max(0.0, ends - time.monotonic()) + 0.1)
    reset_clients()


def iso(value: datetime | None) -> str | None:
    return DateTimeField().to_representation(value) if value else None


def robot_body(robot, connected: bool | None, reporting: bool | None) -> dict:
    return {
        "robot_id": robot.robot_id,
        "name": robot.name,
        "is_active": robot.is_active,
        "connected": connected,
        "reporting": reporting,
        "last_seen_at": iso(robot.last_seen_at),
        "created_at": iso(robot.created_at),
    }


# --- info ---------------------------------------------------------------------------------------


def test_info_is_public_and_counts_leases_connected_and_reporting_robots_fleet_wide(client, redis_client, r2d2, bb8):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")
    connect(redis_client, "r2d2", "ws_r2d2_2_bbbb")
    connect(redis_client, "bb8", "ws_bb8_1_cccc")
    report(redis_client, "r2d2", METRICS, time.time(), 1)

    response = client.get("/api/telemetry/info")

    assert response.status_code == 200
    assert response.json() == {
        "name": "Fleet Telemetry System",
        "version": fleet.__version__,
        "features": FEATURES,
        "active_connections": 3,
        "robots_connected": 2,
        "robots_reporting": 1,
    }


def test_info_counts_zero_on_an_empty_fleet(client):
    response = client.get("/api/telemetry/info")

    assert response.status_code == 200
    assert response.json()["active_connections"] == 0
    assert response.json()["robots_connected"] == 0
    assert response.json()["robots_reporting"] == 0


def test_info_answers_degraded_with_null_counts_when_redis_refuses_connections(client, redis_unreachable):
    started = time.monotonic()
    response = client.get("/api/telemetry/info")

    assert time.monotonic() - started < 3.0  # the clients' 0.5 s timeout, with room for a busy machine
    assert response.status_code == 200
    assert response.json() == {
        "name": "Fleet Telemetry System",
        "version": fleet.__version__,
        "features": FEATURES,
        "active_connections": None,
        "robots_connected": None,
        "robots_reporting": None,
        "degraded": True,
        "detail": "Live counts are unavailable: Redis did not answer.",
    }


def test_info_answers_without_waiting_out_a_hung_redis(client, redis_hung):
    started = time.monotonic()
    response = client.get("/api/telemetry/info")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.json()["degraded"] is True
    assert response.json()["active_connections"] is None
    assert elapsed < 3.0  # the clients' 0.5 s timeout, with room for a busy machine


def test_info_throttles_anonymous_clients(client, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})

    statuses = [client.get("/api/telemetry/info").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/telemetry/info")
    assert response.json() == {
        "detail": "Request was throttled. Expected available in 60 seconds.",
        "code": "throttled",
    }
    assert response["Retry-After"] == "60"


def test_info_does_not_throttle_signed_in_users(api, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})

    statuses = {api.get("/api/telemetry/info").status_code for _ in range(5)}

    assert statuses == {200}


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/telemetry/robots/",
        "/api/telemetry/robots/r2d2/",
        "/api/telemetry/robots/r2d2/metrics",
        "/api/telemetry/robots/r2d2/history/",
    ],
)
def test_private_endpoints_answer_401_to_anonymous_clients(client, r2d2, path):
    response = client.get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}


def test_a_wrong_api_token_gets_401(client, r2d2):
    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION="Token nope")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_a_drf_token_authenticates(client, operator, r2d2):
    token = Token.objects.create(user=operator)

    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION=f"Token {token.key}")

    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_a_robot_token_is_not_an_api_credential(client, r2d2):
    response = client.get("/api/telemetry/robots/", HTTP_AUTHORIZATION=f"Token {r2d2.token}")

    assert response.status_code == 401


def test_a_session_login_authenticates_and_the_api_is_browsable(client, r2d2):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("olivia", password="correct horse")
    assert client.login(username="olivia", password="correct horse")

    response = client.get("/api/telemetry/robots/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"r2d2" in response.content


# --- robots -------------------------------------------------------------------------------------


def test_robots_list_shows_each_robots_live_state(api, redis_client, r2d2, bb8):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")
    report(redis_client, "r2d2", METRICS, time.time(), 1)
    report(redis_client, "bb8", METRICS, time.time(), 1)  # reporting, but its socket has gone

    response = api.get("/api/telemetry/robots/")

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [robot_body(bb8, False, True), robot_body(r2d2, True, True)],
    }


def test_robots_list_is_paginated(api, r2d2, bb8):
    response = api.get("/api/telemetry/robots/?limit=1")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert body["next"] == "http://testserver/api/telemetry/robots/?limit=1&offset=1"
    assert body["previous"] is None
    assert [robot["robot_id"] for robot in body["results"]] == ["bb8"]


def test_robots_list_shows_unknown_live_state_when_redis_is_down(api, r2d2, redis_unreachable):
    response = api.get("/api/telemetry/robots/")

    assert response.status_code == 200
    assert response.json()["results"] == [robot_body(r2d2, None, None)]


def test_robot_detail_shows_one_robot(api, redis_client, r2d2):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")

    response = api.get("/api/telemetry/robots/r2d2/")

    assert response.status_code == 200
    assert response.json() == robot_body(r2d2, True, False)


@pytest.mark.parametrize("robot_id", ["nope", "bad%20id"])
def test_robot_detail_of_an_unknown_or_malformed_robot_is_a_json_404(api, robot_id):
    response = api.get(f"/api/telemetry/robots/{robot_id}/")

    assert response.status_code == 404
    shown = robot_id.replace("%20", " ")
    assert response.json() == {"detail": f"No robot with robot_id {shown!r}.", "code": "robot_not_found"}


# --- metrics ------------------------------------------------------------------------------------


@pytest.fixture
def published():
    """Every metrics_published signal sent during the test, as (sender, kwargs)."""
    sent = []

    def receiver(sender, **kwargs):
        kwargs.pop("signal")
        sent.append((sender, kwargs))

    signals.metrics_published.connect(receiver, dispatch_uid="test_telemetry_api.published")
    yield sent
    signals.metrics_published.disconnect(dispatch_uid="test_telemetry_api.published")


def test_metrics_returns_the_latest_accepted_frame_and_live_state(api, redis_client, r2d2, published):
    connect(redis_client, "r2d2", "ws_r2d2_1_aaaa")
    report(redis_client, "r2d2", METRICS, 1703003456.5, 17)

    response = api.get("/api/telemetry/robots/r2d2/metrics")

    assert response.status_code == 200
    assert response.json() == {
        "robot_id": "r2d2",
        "cpu_usage": 45.2,
        "memory_usage": 62.8,
        "network_latency_ms": 12.5,
        "battery_percentage": 78.0,
        "reported_at": 1703003456.5,
        "connected": True,
        "reporting": True,
    }


def test_a_metrics_read_sends_metrics_published_with_the_four_metrics(api, redis_client, r2d2, published):
    report(redis_client, "r2d2", METRICS, 1703003456.5, 17)
    before = time.time()

    api.get("/api/telemetry/robots/r2d2/metrics")

    assert len(published) == 1
    sender, payload = published[0]
    timestamp = payload.pop("timestamp")
    assert payload == {"robot_id": "r2d2", "metrics": METRICS}
    assert isinstance(timestamp, float)
    assert before <= timestamp <= time.time()


@override_settings(TELEMETRY_PUBLISH_ON_READ=False)
def test_a_metrics_read_sends_nothing_when_publish_on_read_is_off(api, redis_client, r2d2, published):
    report(redis_client, "r2d2", METRICS, 1703003456.5, 17)

    response = api.get("/api/telemetry/robots/r2d2/metrics")

    assert response.status_code == 200
    assert published == []


def test_metrics_of_a_robot_that_never_reported_is_a_404_no_telemetry(api, r2d2, published):
    response = api.get("/api/telemetry/robots/r2d2/metrics")

    assert response.status_code == 404
    assert response.json() == {"detail": "Robot 'r2d2' has not reported telemetry yet.", "code": "no_telemetry"}
    assert published == []


def test_metrics_of_an_unknown_robot_is_a_404(api, published):
    response = api.get("/api/telemetry/robots/ghost/metrics")

    assert response.status_code == 404
    assert response.json() == {"detail": "No robot with robot_id 'ghost'.", "code": "robot_not_found"}
    assert published == []


def test_metrics_answer_503_when_redis_is_down(api, r2d2, published, redis_unreachable):
    response = api.get("/api/telemetry/robots/r2d2/metrics")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "Live telemetry is unavailable: Redis did not answer.",
        "code": "redis_unavailable",
    }
    assert published == []


# --- history ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def history(r2d2, bb8):
    """Five samples of r2d2, one a minute from T0, and one of bb8 at T0."""
    samples = [TelemetrySample(robot=r2d2, reported_at=T0 + timedelta(minutes=i), seq=i, **METRICS) for i in range(5)]
    samples.append(TelemetrySample(robot=bb8, reported_at=T0, seq=99, **METRICS))
    TelemetrySample.objects.bulk_create(samples)


def sample_body(minute: int) -> dict:
    return {"reported_at": iso(T0 + timedelta(minutes=minute)), "seq": minute, **METRICS}


def test_history_lists_the_robots_samples_newest_first(api, history):
    response = api.get("/api/telemetry/robots/r2d2/history/")

    assert response.status_code == 200
    assert response.json() == {
        "count": 5,
        "next": None,
        "previous": None,
        "results": [sample_body(minute) for minute in (4, 3, 2, 1, 0)],
    }


def test_history_filters_by_since_inclusive_and_until_exclusive(api, history):
    since = (T0 + timedelta(minutes=1)).isoformat()
    until = (T0 + timedelta(minutes=3)).timestamp()

    response = api.get("/api/telemetry/robots/r2d2/history/", {"since": since, "until": until})

    assert response.status_code == 200
    assert response.json()["results"] == [sample_body(2), sample_body(1)]


def test_history_takes_a_naive_datetime_as_utc(api, history):
    response = api.get("/api/telemetry/robots/r2d2/history/", {"since": "2026-11-01T12:04:00"})

    assert response.json()["results"] == [sample_body(4)]


def test_history_is_paginated(api, history):
    response = api.get("/api/telemetry/robots/r2d2/history/", {"limit": 2, "offset": 2})

    body = response.json()
    assert body["count"] == 5
    assert body["results"] == [sample_body(2), sample_body(1)]
    assert body["next"] == "http://testserver/api/telemetry/robots/r2d2/history/?limit=2&offset=4"
    assert body["previous"] == "http://testserver/api/telemetry/robots/r2d2/history/?limit=2"


@pytest.mark.parametrize(
    "query, detail",
    [
        ({"since": "yesterday"}, "since must be an ISO 8601 datetime or Unix seconds; got 'yesterday'."),
        ({"until": "2026-13-40"}, "until must be an ISO 8601 datetime or Unix seconds; got '2026-13-40'."),
        ({"since": "nan"}, "since must be an ISO 8601 datetime or Unix seconds; got 'nan'."),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since must be earlier than until."),
    ],
)
def test_history_rejects_bad_since_or_until_with_a_400(api, history, query, detail):
    response = api.get("/api/telemetry/robots/r2d2/history/", query)

    assert response.status_code == 400
    assert response.json() == {"detail": detail, "code": "invalid_query"}


def test_history_of_an_unknown_robot_is_a_404(api):
    response = api.get("/api/telemetry/robots/ghost/history/")

    assert response.status_code == 404
    assert response.json() == {"detail": "No robot with robot_id 'ghost'.", "code": "robot_not_found"}


# --- OpenAPI ------------------------------------------------------------------------------------


def test_the_openapi_schema_generates(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    for path in (
        "/api/telemetry/info",
        "/api/telemetry/robots/",
        "/api/telemetry/robots/{robot_id}/",
        "/api/telemetry/robots/{robot_id}/metrics",
        "/api/telemetry/robots/{robot_id}/history/",
    ):
        assert f"  {path}:".encode() in response.content


def test_the_telemetry_endpoints_generate_no_schema_warnings():
    from telemetry.urls import urlpatterns

    GENERATOR_STATS.reset()
    SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)

    assert dict(GENERATOR_STATS._warn_cache) == {}
    assert dict(GENERATOR_STATS._error_cache) == {}


def test_the_api_docs_render(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger-ui" in response.content


# --- end to end ---------------------------------------------------------------------------------


def wait_for(check, timeout: float = 5.0):
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


@pytest.mark.e2e
def test_the_api_serves_what_a_robot_streamed_through_a_real_daphne(transactional_db, tmp_path, client, operator):
    _, token = create_robot("r2d2")
    client.force_login(operator)
    server = ServerProcess.daphne(tmp_path)
    frame = {"type": "telemetry", "seq": 17, "ts": round(time.time(), 3), **METRICS}

    def poll(path: str, until) -> dict:
        # In a worker thread: close its database connection, or PostgreSQL can't drop the test database.
        try:
            return wait_for(lambda: (body := client.get(path).json()) and until(body) and body)
        finally:
            connections.close_all()

    async def scenario() -> tuple[dict, dict, dict]:
        url = f"{server.ws_url}/api/telemetry/ws/r2d2"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
            await socket.send(json.dumps(frame))
            assert json.loads(await socket.recv()) == {"type": "ack", "seq": 17}
            metrics = await asyncio.to_thread(poll, "/api/telemetry/robots/r2d2/metrics", lambda b: "cpu_usage" in b)
            info = await asyncio.to_thread(poll, "/api/telemetry/info", lambda b: b["robots_reporting"] == 1)
        after = await asyncio.to_thread(poll, "/api/telemetry/info", lambda b: b["active_connections"] == 0)
        return metrics, info, after

    try:
        metrics, info, after = asyncio.run(scenario())
    finally:
        server.stop()

    assert metrics == {"robot_id": "r2d2", **METRICS, "reported_at": frame["ts"], "connected": True, "reporting": True}
    assert (info["active_connections"], info["robots_connected"], info["robots_reporting"]) == (1, 1, 1)
    assert (after["active_connections"], after["robots_connected"], after["robots_reporting"]) == (0, 0, 1)
