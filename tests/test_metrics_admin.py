"""Counters in Django admin: list with trends, a history chart and a paginated snapshot table."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from metrics.models import Counter, CounterSnapshot
from tests.conftest import add_to_counter


def counter_with_history(snapshots: int, name: str = "mission_status_total") -> Counter:
    add_to_counter(name, {"status": "completed"}, snapshots)
    counter = Counter.objects.get(name=name)
    start = timezone.now() - timedelta(seconds=30 * snapshots)
    CounterSnapshot.objects.bulk_create(
        CounterSnapshot(counter=counter, value=n + 1, taken_at=start + timedelta(seconds=30 * n))
        for n in range(snapshots)
    )
    return counter


@pytest.fixture
def staff_client(client, operator):
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    return client


@pytest.mark.django_db
def test_the_history_page_renders_a_chart_of_1000_snapshots_and_a_paginated_table(staff_client):
    counter = counter_with_history(1000)

    response = staff_client.get(f"/admin/metrics/counter/{counter.id}/change/")

    assert response.status_code == 200
    html = response.content.decode()
    series = re.search(r'<polyline class="series"[^>]* points="([^"]+)"', html)
    assert series is not None
    assert len(series.group(1).split()) == 1000
    assert 'aria-label="history of 1000 snapshots"' in html
    assert html.count('<tr class="snapshot">') == 50
    assert "page 1 of 20" in html
    assert "<td>1000</td>" in html  # newest first

    last_page = staff_client.get(f"/admin/metrics/counter/{counter.id}/change/?snapshots_page=20")
    assert last_page.status_code == 200
    assert last_page.content.decode().count('<tr class="snapshot">') == 50
    assert "<td>1</td>" in last_page.content.decode()


@pytest.mark.django_db
def test_the_history_chart_marks_gaps(staff_client):
    add_to_counter("mission_entries_lost_total", amount=5)
    counter = Counter.objects.get()
    now = timezone.now()
    CounterSnapshot.objects.create(counter=counter, value=0, taken_at=now - timedelta(minutes=1))
    CounterSnapshot.objects.create(counter=counter, value=5, taken_at=now, gap=True, note="5 entries lost")

    html = staff_client.get(f"/admin/metrics/counter/{counter.id}/change/").content.decode()

    assert html.count('<circle class="gap"') == 1
    assert "5 entries lost</title>" in html
    assert '<td class="gap">5 entries lost</td>' in html


@pytest.mark.django_db
def test_the_counter_list_shows_name_labels_value_and_a_trend(staff_client, django_assert_max_num_queries):
    for n in range(5):
        counter_with_history(40, name=f"c{n}_total")

    with django_assert_max_num_queries(12):
        response = staff_client.get("/admin/metrics/counter/")

    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="counter-sparkline"') == 5
    assert "{status=&quot;completed&quot;}" in html
    assert "c3_total" in html
    sparkline = re.search(r'class="counter-sparkline".*?points="([^"]+)"', html)
    assert len(sparkline.group(1).split()) == 30


@pytest.mark.django_db
def test_snapshots_and_counters_are_read_only_in_admin(staff_client):
    counter = counter_with_history(3)
    snapshot = CounterSnapshot.objects.first()

    assert staff_client.get("/admin/metrics/countersnapshot/").status_code == 200
    assert staff_client.get("/admin/metrics/countersnapshot/add/").status_code == 403
    assert staff_client.get(f"/admin/metrics/countersnapshot/{snapshot.id}/delete/").status_code == 403
    page = staff_client.get(f"/admin/metrics/countersnapshot/{snapshot.id}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert staff_client.get("/admin/metrics/counter/add/").status_code == 403
    posted = staff_client.post(f"/admin/metrics/counter/{counter.id}/change/", {"value": 0})
    assert posted.status_code == 403
    counter.refresh_from_db()
    assert counter.value == 3


@pytest.mark.django_db
def test_the_history_chart_can_show_the_increase_per_interval(staff_client):
    add_to_counter("mission_status_total", {"status": "completed"}, 10)
    counter = Counter.objects.get()
    now = timezone.now()
    for minutes, value in ((3, 2), (2, 5), (1, 5), (0, 10)):
        CounterSnapshot.objects.create(counter=counter, value=value, taken_at=now - timedelta(minutes=minutes))

    html = staff_client.get(f"/admin/metrics/counter/{counter.id}/change/?chart=increase").content.decode()

    assert "<strong>Increase per interval</strong>" in html
    assert 'aria-label="history of 3 snapshots"' in html
    # Increases 3, 0, 5: the axis runs from 0 to 5.
    labels = re.findall(r'text-anchor="end" font-size="11" fill="#666">([^<]+)</text>', html)
    assert labels[:3] == ["0", "2", "5"]
    total = staff_client.get(f"/admin/metrics/counter/{counter.id}/change/").content.decode()
    assert "<strong>Running total</strong>" in total
    assert 'aria-label="history of 4 snapshots"' in total


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["counter", "countersnapshot"])
def test_counters_and_snapshots_can_be_viewed_but_not_added_changed_or_deleted(staff_client, model):
    counter = counter_with_history(3)
    obj = counter if model == "counter" else counter.snapshots.first()

    listing = staff_client.get(f"/admin/metrics/{model}/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert 'value="delete_selected"' not in html
    assert f'href="/admin/metrics/{model}/add/"' not in html

    page = staff_client.get(f"/admin/metrics/{model}/{obj.id}/change/")
    assert page.status_code == 200
    assert f"/admin/metrics/{model}/{obj.id}/delete/" not in page.content.decode()
    assert 'name="_save"' not in page.content.decode()

    assert staff_client.get(f"/admin/metrics/{model}/{obj.id}/delete/").status_code == 403
    assert staff_client.post(f"/admin/metrics/{model}/{obj.id}/delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get(f"/admin/metrics/{model}/add/").status_code == 403
    bulk = staff_client.post(f"/admin/metrics/{model}/", {"action": "delete_selected", "_selected_action": [obj.id]})
    assert bulk.status_code == 200  # the listing again, with "No action selected"
    assert Counter.objects.count() == 1 and CounterSnapshot.objects.count() == 3
