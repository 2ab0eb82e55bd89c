"""/metrics: the Prometheus exposition read from the database at scrape time."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import add_to_counter


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.mark.django_db
def test_it_exposes_counters_that_parse_with_exact_values(client):
    add_to_counter("mission_status_total", {"status": "completed"}, 42)
    add_to_counter("mission_status_total", {"status": "failed"}, 3)
    add_to_counter("mission_entries_invalid_total", None, 2)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert 'mission_status_total{status="completed"} 42.0' in response.content.decode()
    parsed = samples(response.content)
    assert parsed[("mission_status_total", (("status", "completed"),))] == 42
    assert parsed[("mission_status_total", (("status", "failed"),))] == 3
    assert parsed[("mission_entries_invalid_total", ())] == 2
    assert parsed[("mission_entries_lost_total", ())] == 0
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    assert families["mission_status"].type == "counter"


@pytest.mark.django_db
def test_the_invalid_and_lost_counters_are_there_before_any_increment(client):
    parsed = samples(client.get("/metrics").content)

    assert parsed[("mission_entries_invalid_total", ())] == 0
    assert parsed[("mission_entries_lost_total", ())] == 0


@pytest.mark.django_db
def test_it_reads_the_database_at_each_scrape(client):
    add_to_counter("mission_status_total", {"status": "completed"})
    first = samples(client.get("/metrics").content)
    add_to_counter("mission_status_total", {"status": "completed"}, 4)
    second = samples(client.get("/metrics").content)

    assert first[("mission_status_total", (("status", "completed"),))] == 1
    assert second[("mission_status_total", (("status", "completed"),))] == 5


@pytest.mark.django_db
@override_settings(METRICS_BEARER_TOKEN="s3cret-scrape-token")
def test_it_requires_the_bearer_token_when_one_is_set(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-scrape-token").status_code == 401
    refused = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token-and-more")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert refused.json() == {
        "detail": "Send Authorization: Bearer <METRICS_BEARER_TOKEN>.",
        "code": "not_authenticated",
    }

    allowed = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert allowed.status_code == 200
    assert ("mission_entries_lost_total", ()) in samples(allowed.content)


@pytest.mark.django_db
@override_settings(METRICS_BEARER_TOKEN="", METRICS_ALLOW_ANONYMOUS=False)
def test_without_a_token_it_refuses_everyone_unless_anonymous_scrapes_are_allowed(client):
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json() == {
        "detail": "Set METRICS_BEARER_TOKEN (or METRICS_ALLOW_ANONYMOUS=1) on the server, "
        "then send Authorization: Bearer <METRICS_BEARER_TOKEN>.",
        "code": "not_authenticated",
    }
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    with override_settings(METRICS_ALLOW_ANONYMOUS=True):
        assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_it_builds_its_registry_from_the_configured_collectors(client):
    with override_settings(METRICS_COLLECTORS=["tests.test_prometheus.ConstantCollector"]):
        body = client.get("/metrics").content

    assert samples(body) == {("fleet_test_gauge", ()): 7.0}


class ConstantCollector:
    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("fleet_test_gauge", "A constant for the test.", value=7)


@pytest.mark.django_db
def test_the_aggregation_runs_and_the_latest_duration_are_read_from_the_database(client, tmp_path):
    import redis

    from metrics.aggregation import aggregate_mission_metrics

    before = samples(client.get("/metrics").content)
    assert before[("metrics_aggregation_runs_total", (("result", "completed"),))] == 0
    assert before[("metrics_aggregation_runs_total", (("result", "failed"),))] == 0
    assert not any(name == "metrics_aggregation_last_duration_seconds" for name, _ in before)

    aggregate_mission_metrics()
    aggregate_mission_metrics()
    with pytest.raises(redis.ConnectionError):
        aggregate_mission_metrics(redis=redis.Redis(unix_socket_path=str(tmp_path / "nowhere.sock")))

    after = samples(client.get("/metrics").content)
    assert after[("metrics_aggregation_runs_total", (("result", "completed"),))] == 2
    assert after[("metrics_aggregation_runs_total", (("result", "failed"),))] == 1
    assert 0 < after[("metrics_aggregation_last_duration_seconds", ())] < 5
