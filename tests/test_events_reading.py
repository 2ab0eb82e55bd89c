"""Reading the event stream: `tail_events` and GET /api/events/."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from prometheus_client import CollectorRegistry, generate_latest
from rest_framework.authtoken.models import Token

from fleet.events.envelope import make_envelope
from fleet.events.prometheus import EventsCollector
from fleet.events.stream import DROPPED_KEY

STREAM = "brain:events:stream"

pytestmark = pytest.mark.django_db


def add_event(redis_client, event_type: str, n: int) -> str:
    envelope = make_envelope(event_type, {"n": n}, None)
    return redis_client.xadd(STREAM, {"type": event_type, "data": json.dumps(envelope)}).decode()


@pytest.fixture
def events(redis_client) -> list[tuple[str, str]]:
    """Ten events alternating between the two modules: (stream id, type), oldest first."""
    kinds = ["metrics.aggregation_started", "telemetry.connection_established"]
    return [(add_event(redis_client, kinds[n % 2], n), kinds[n % 2]) for n in range(10)]


def tail(*args: str) -> list[dict]:
    out = StringIO()
    call_command("tail_events", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_tail_events_prints_the_last_events_oldest_first(events):
    printed = tail("--count", "3")
    assert [event["payload"]["n"] for event in printed] == [7, 8, 9]
    assert [event["stream_id"] for event in printed] == [stream_id for stream_id, _ in events[7:]]


def test_tail_events_filters_by_type_prefix_and_starts_after_since(events):
    printed = tail("--type", "telemetry.", "--since", events[4][0])
    assert [event["payload"]["n"] for event in printed] == [5, 7, 9]
    assert {event["type"] for event in printed} == {"telemetry.connection_established"}


def test_tail_events_refuses_a_malformed_since():
    with pytest.raises(CommandError, match="--since must be a stream ID"):
        tail("--since", "yesterday")


@pytest.fixture
def staff_client(client, operator):
    client.force_login(operator)
    return client


def test_the_api_lists_events_newest_first_with_their_stream_ids(staff_client, events):
    response = staff_client.get("/api/events/", {"limit": 4})
    assert response.status_code == 200
    body = response.json()
    assert [event["payload"]["n"] for event in body["results"]] == [9, 8, 7, 6]
    assert [event["stream_id"] for event in body["results"]] == [stream_id for stream_id, _ in events[9:5:-1]]
    assert f"before={events[6][0]}" in body["next"]

    second = staff_client.get(body["next"]).json()
    assert [event["payload"]["n"] for event in second["results"]] == [5, 4, 3, 2]


def test_the_api_filters_by_type_and_ends_paging_at_the_oldest_event(staff_client, events):
    body = staff_client.get("/api/events/", {"type": "metrics.", "limit": 10}).json()
    assert [event["payload"]["n"] for event in body["results"]] == [8, 6, 4, 2, 0]
    assert body["next"] is None


def test_the_api_rejects_bad_parameters_clearly(staff_client):
    response = staff_client.get("/api/events/", {"before": "../etc", "limit": 0})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "limit: Ensure this value is greater than or equal to 1.; "
        "before: before must be a stream ID such as 1703003456789-0",
        "code": "invalid_query",
    }


def test_the_api_is_for_staff_only(client, django_user_model):
    anonymous = client.get("/api/events/")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Token"
    assert anonymous.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}
    user = django_user_model.objects.create_user("integrator", password="x")
    token = Token.objects.create(user=user)
    refused = client.get("/api/events/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "You do not have permission to perform this action.",
        "code": "permission_denied",
    }


def test_the_collector_exposes_dropped_events_fleet_wide(redis_client):
    redis_client.set(DROPPED_KEY, 30)
    registry = CollectorRegistry()
    registry.register(EventsCollector())
    assert "fleet_events_dropped_total 30.0" in generate_latest(registry).decode()
