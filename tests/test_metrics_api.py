"""DRF: /api/metrics/counters/ and each counter's snapshot history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from metrics.models import Counter, CounterSnapshot
from tests.conftest import add_to_counter

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def completed() -> Counter:
    """mission_status_total{status="completed"} with 5 snapshots, one a minute from T0."""
    add_to_counter("mission_status_total", {"status": "completed"}, 42)
    add_to_counter("mission_status_total", {"status": "failed"}, 3)
    add_to_counter("mission_entries_invalid_total", None, 1)
    counter = Counter.objects.get(name="mission_status_total", labels={"status": "completed"})
    CounterSnapshot.objects.bulk_create(
        CounterSnapshot(counter=counter, value=10 * (n + 1), taken_at=T0 + timedelta(minutes=n)) for n in range(5)
    )
    return counter


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/metrics/counters/", "/api/metrics/counters/{id}/", "/api/metrics/counters/{id}/history/"]
)
def test_anonymous_requests_get_401_with_a_code(completed, path):
    response = APIClient().get(path.format(id=completed.id))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}


@pytest.mark.django_db
def test_it_lists_counters_filtered_by_name(api, completed):
    response = api.get("/api/metrics/counters/", {"name": "mission_status_total"})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    first = body["results"][0]
    assert {key: first[key] for key in ("id", "name", "labels", "value")} == {
        "id": completed.id,
        "name": "mission_status_total",
        "labels": {"status": "completed"},
        "value": 42,
    }
    assert first["history"] == f"http://testserver/api/metrics/counters/{completed.id}/history/"
    assert [c["labels"]["status"] for c in body["results"]] == ["completed", "failed"]
    assert api.get("/api/metrics/counters/").json()["count"] == 3


@pytest.mark.django_db
def test_it_returns_a_counters_history_newest_first_and_paginated(api, completed):
    response = api.get(f"/api/metrics/counters/{completed.id}/history/", {"limit": 2, "offset": 1})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert body["results"] == [
        {"value": 40, "taken_at": "2026-01-31T12:03:00Z", "gap": False, "note": ""},
        {"value": 30, "taken_at": "2026-01-31T12:02:00Z", "gap": False, "note": ""},
    ]
    assert body["next"] is not None


@pytest.mark.django_db
def test_it_filters_history_from_since_inclusive_to_until_exclusive_in_iso_or_unix_seconds(api, completed):
    url = f"/api/metrics/counters/{completed.id}/history/"

    iso = api.get(url, {"since": "2026-01-31T12:01:00Z", "until": "2026-01-31T12:03:00"}).json()
    unix = api.get(url, {"since": str(T0.timestamp() + 60), "until": str(T0.timestamp() + 180)}).json()

    assert [s["value"] for s in iso["results"]] == [30, 20]
    assert [s["value"] for s in unix["results"]] == [30, 20]


@pytest.mark.django_db
def test_bad_since_or_until_is_a_400_that_says_what_to_send(api, completed):
    url = f"/api/metrics/counters/{completed.id}/history/"

    bad = api.get(url, {"since": "yesterday"})
    backwards = api.get(url, {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})

    assert bad.status_code == 400
    assert bad.json() == {
        "detail": "since must be an ISO 8601 datetime or Unix seconds; got 'yesterday'.",
        "code": "invalid_query",
    }
    assert backwards.status_code == 400
    assert backwards.json() == {"detail": "since must be earlier than until.", "code": "invalid_query"}


@pytest.mark.django_db
def test_an_unknown_counter_is_a_404_with_a_code(api):
    for path in ("/api/metrics/counters/999999/history/", "/api/metrics/counters/999999/"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "No counter with id '999999'.", "code": "counter_not_found"}


@pytest.mark.django_db
def test_the_browsable_api_renders(client, operator, completed):
    client.force_login(operator)
    response = client.get(f"/api/metrics/counters/{completed.id}/history/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"Counter" in response.content


@pytest.mark.django_db
def test_the_schema_describes_the_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    history = paths["/api/metrics/counters/{id}/history/"]["get"]
    assert {p["name"] for p in history["parameters"]} >= {"id", "since", "until", "limit", "offset"}
    assert {p["name"] for p in paths["/api/metrics/counters/"]["get"]["parameters"]} >= {"name", "limit", "offset"}
