"""The alert REST API: rules (staff write, signed-in read) and alerts, and the example rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from telemetry.models import Alert, AlertRule

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(django_user_model):
    """A signed-in user who is not staff: reads, never writes."""
    return django_user_model.objects.create_user("victor", "victor@example.com", "correct horse")


def at(minute: int) -> datetime:
    return datetime(2026, 12, 1, 10, minute, tzinfo=UTC)


def test_migrations_create_the_three_examples_disabled():
    rules = AlertRule.objects.values_list("name", "metric", "op", "threshold", "for_seconds", "enabled")
    assert sorted(rules) == [
        ("battery_low", "battery_percentage", "lt", 20.0, 60.0, False),
        ("cpu_high", "cpu_usage", "gt", 90.0, 120.0, False),
        ("not_reporting", "reporting", "is_false", 0.0, 120.0, False),
    ]


def test_staff_may_create_and_change_rules(client, operator):
    client.force_login(operator)
    body = {"name": "latency_high", "metric": "network_latency_ms", "op": "ge", "threshold": 500, "for_seconds": 30}
    created = client.post("/api/telemetry/alert-rules/", body, content_type="application/json")
    assert created.status_code == 201, created.json()
    assert created.json() == {
        "id": created.json()["id"],
        **body,
        "threshold": 500.0,
        "for_seconds": 30.0,
        "clear_threshold": None,
        "enabled": True,
    }
    changed = client.patch(
        "/api/telemetry/alert-rules/battery_low/", {"enabled": True}, content_type="application/json"
    )
    assert changed.status_code == 200
    assert AlertRule.objects.get(name="battery_low").enabled is True


def test_a_signed_in_user_may_read_rules_but_not_write_them(client, viewer):
    client.force_login(viewer)
    listed = client.get("/api/telemetry/alert-rules/")
    assert listed.status_code == 200
    assert [rule["name"] for rule in listed.json()["results"]] == ["battery_low", "cpu_high", "not_reporting"]
    refused = client.patch("/api/telemetry/alert-rules/cpu_high/", {"enabled": True}, content_type="application/json")
    assert refused.status_code == 403


def test_anonymous_callers_get_401(client):
    assert client.get("/api/telemetry/alert-rules/").status_code == 401
    assert client.get("/api/telemetry/alerts/").status_code == 401


def test_a_rule_whose_fields_do_not_fit_together_is_refused(client, operator):
    client.force_login(operator)
    cases = [
        ({"metric": "reporting", "op": "lt"}, "op"),
        ({"metric": "cpu_usage", "op": "is_false"}, "op"),
        ({"metric": "battery_percentage", "op": "lt", "threshold": 20, "clear_threshold": 15}, "clear_threshold"),
        ({"metric": "cpu_usage", "op": "gt", "threshold": 90, "clear_threshold": 95}, "clear_threshold"),
    ]
    for fields, bad in cases:
        answer = client.post("/api/telemetry/alert-rules/", {"name": "x", **fields}, content_type="application/json")
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_query"
        assert answer.json()["detail"].startswith(f"{bad}: ")


def test_alerts_are_listed_newest_first_and_filtered_by_active_and_robot(client, viewer, r2d2):
    client.force_login(viewer)
    from telemetry.robots import create_robot

    bb8, _ = create_robot("bb8")
    battery, cpu = AlertRule.objects.get(name="battery_low"), AlertRule.objects.get(name="cpu_high")
    old = Alert.objects.create(rule=battery, robot=r2d2, raised_at=at(1), cleared_at=at(5), value=12, peak=9)
    active = Alert.objects.create(rule=battery, robot=r2d2, raised_at=at(10), value=15, peak=15)
    other = Alert.objects.create(rule=cpu, robot=bb8, raised_at=at(20), value=95, peak=99)

    everything = client.get("/api/telemetry/alerts/").json()
    assert [alert["id"] for alert in everything["results"]] == [other.id, active.id, old.id]
    assert everything["results"][1] == {
        "id": active.id,
        "rule": "battery_low",
        "robot_id": "r2d2",
        "metric": "battery_percentage",
        "threshold": 20.0,
        "active": True,
        "raised_at": "2026-12-01T10:10:00Z",
        "cleared_at": None,
        "value": 15.0,
        "peak": 15.0,
    }
    only_active = client.get("/api/telemetry/alerts/?active=true&robot_id=r2d2").json()
    assert [alert["id"] for alert in only_active["results"]] == [active.id]
    assert only_active["count"] == 1
    cleared = client.get("/api/telemetry/alerts/?active=false").json()
    assert [alert["id"] for alert in cleared["results"]] == [old.id]
    paged = client.get("/api/telemetry/alerts/?limit=1&offset=1").json()
    assert [alert["id"] for alert in paged["results"]] == [active.id]
    bad = client.get("/api/telemetry/alerts/?active=maybe")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_query")


def test_disabling_a_rule_clears_its_active_alerts(client, operator, r2d2, django_capture_on_commit_callbacks):
    client.force_login(operator)
    rule = AlertRule.objects.get(name="battery_low")
    Alert.objects.create(rule=rule, robot=r2d2, raised_at=at(10), value=15, peak=12)
    with django_capture_on_commit_callbacks(execute=True):
        client.patch("/api/telemetry/alert-rules/battery_low/", {"enabled": False}, content_type="application/json")
    assert Alert.objects.get().cleared_at is not None


def test_admin_lists_the_rules_and_the_active_alerts(admin_client, r2d2):
    rule = AlertRule.objects.get(name="cpu_high")
    Alert.objects.create(rule=rule, robot=r2d2, raised_at=at(10), value=95, peak=97)
    rules = admin_client.get("/admin/telemetry/alertrule/")
    assert rules.status_code == 200
    assert b"not_reporting" in rules.content
    alerts = admin_client.get("/admin/telemetry/alert/?active=true")
    assert alerts.status_code == 200
    assert b"r2d2" in alerts.content
    refused = admin_client.post(
        "/admin/telemetry/alertrule/add/",
        {"name": "bad", "metric": "reporting", "op": "gt", "threshold": "1", "for_seconds": "0"},
    )
    assert refused.status_code == 200
    assert b"takes `is_false`" in refused.content


def test_metrics_expose_the_active_alerts_of_each_enabled_rule(client, r2d2):
    from tests.test_prometheus import samples

    AlertRule.objects.filter(name__in=["battery_low", "cpu_high"]).update(enabled=True)
    battery = AlertRule.objects.get(name="battery_low")
    Alert.objects.create(rule=battery, robot=r2d2, raised_at=at(1), cleared_at=at(5), value=12, peak=9)
    Alert.objects.create(rule=battery, robot=r2d2, raised_at=at(10), value=15, peak=15)
    parsed = samples(client.get("/metrics").content)
    gauges = {labels: value for (name, labels), value in parsed.items() if name == "fleet_alerts_active"}
    assert gauges == {(("rule", "battery_low"),): 1.0, (("rule", "cpu_high"),): 0.0}
