"""DRF: /api/metrics/counters/ and each counter's snapshot history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from metrics.counters import inc_counter
from metrics.models import Counter, CounterSnapshot

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def completed() -> Counter:
    """mission_status_total{status="completed"} with 5 snapshots, one a minute from T0."""
    inc_counter("mission_status_total", {"status": "completed"}, 42)
    inc_counter("mission_status_total", {"status": "failed"}, 3)
    inc_counter("mission_entries_invalid_total", None, 1)
    counter = Counter.objects.get(name="mission_status_total", labels={"status": "completed"})
    CounterSnapshot.objects.bulk_create(
        CounterSnapshot(counter=counter, value=10 * (n + 1), taken_at=T0 + timedelta(minutes=n)) for n in range(5)
    )
    return counter


@pytest.mark.django_db
def test_anonymous_requests_are_refused(completed):
    client = APIClient()
    assert client.get("/api/metrics/counters/").status_code in (401, 403)
    assert client.get(f"/api/metrics/counters/{completed.id}/history/").status_code in (401, 403)


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
def test_it_returns_a_counters_history_oldest_first_and_paginated(api, completed):
    response = api.get(f"/api/metrics/counters/{completed.id}/history/", {"limit": 2, "offset": 1})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert body["results"] == [
        {"value": 20, "taken_at": "2026-01-31T12:01:00Z", "gap": False, "note": ""},
        {"value": 30, "taken_at": "2026-01-31T12:02:00Z", "gap": False, "note": ""},
    ]
    assert body["next"] is not None


@pytest.mark.django_db
def test_it_filters_history_by_since_and_until_in_iso_or_unix_seconds(api, completed):
    url = f"/api/metrics/counters/{completed.id}/history/"

    iso = api.get(url, {"since": "2026-01-31T12:01:00Z", "until": "2026-01-31T12:03:00"}).json()
    unix = api.get(url, {"since": str(T0.timestamp() + 60), "until": str(T0.timestamp() + 180)}).json()

    assert [s["value"] for s in iso["results"]] == [20, 30, 40]
    assert [s["value"] for s in unix["results"]] == [20, 30, 40]


@pytest.mark.django_db
def test_bad_since_or_until_is_a_400_that_says_what_to_send(api, completed):
    url = f"/api/metrics/counters/{completed.id}/history/"

    bad = api.get(url, {"since": "yesterday"})
    backwards = api.get(url, {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})

    assert bad.status_code == 400
    assert bad.json() == {
        "since": ["Give an ISO 8601 date-time (e.g. 2026-01-31T12:00:00Z) or Unix seconds (e.g. 1769860800)."]
    }
    assert backwards.status_code == 400
    assert backwards.json() == {"until": ["until must not be before since."]}


@pytest.mark.django_db
def test_an_unknown_counter_is_a_404(api):
    assert api.get("/api/metrics/counters/999999/history/").status_code == 404
    assert api.get("/api/metrics/counters/999999/").status_code == 404


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
