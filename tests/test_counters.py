"""Counters: atomic upserts that every process can see, with canonical labels."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from metrics.counters import counter_key, inc_counters, snapshot_counters
from metrics.models import Counter, CounterSnapshot
from tests.conftest import add_to_counter, counter_value


@pytest.mark.django_db
def test_it_creates_a_counter_on_first_increment_and_adds_after():
    add_to_counter("jobs_total")
    add_to_counter("jobs_total", amount=41)

    counter = Counter.objects.get(name="jobs_total")
    assert counter.value == 42
    assert counter.labels == {}


@pytest.mark.django_db
def test_it_stores_labels_in_canonical_order_so_equal_sets_share_a_row():
    add_to_counter("hits_total", {"b": "2", "a": 1})
    add_to_counter("hits_total", {"a": "1", "b": 2})

    counter = Counter.objects.get(name="hits_total")
    assert counter.value == 2
    assert list(counter.labels) == ["a", "b"]
    assert counter.labels == {"a": "1", "b": "2"}
    assert counter_value("hits_total", {"b": 2, "a": 1}) == 2


@pytest.mark.django_db
def test_it_keeps_label_sets_apart():
    add_to_counter("mission_status_total", {"status": "completed"}, 3)
    add_to_counter("mission_status_total", {"status": "failed"}, 1)
    add_to_counter("mission_status_total", None, 7)

    assert counter_value("mission_status_total", {"status": "completed"}) == 3
    assert counter_value("mission_status_total", {"status": "failed"}) == 1
    assert counter_value("mission_status_total") == 7
    assert counter_value("mission_status_total", {"status": "unknown"}) == 0


@pytest.mark.django_db
def test_it_applies_a_batch_in_one_statement_and_returns_the_changed_ids(django_assert_num_queries):
    add_to_counter("a_total", amount=1)
    deltas = {counter_key("a_total"): 2, counter_key("b_total", {"x": "1"}): 5, counter_key("c_total"): 0}

    with django_assert_num_queries(1):
        ids = inc_counters(deltas)

    assert sorted(Counter.objects.filter(id__in=ids).values_list("name", "value")) == [("a_total", 3), ("b_total", 5)]


@pytest.mark.django_db
def test_it_refuses_negative_amounts_and_bad_names():
    with pytest.raises(ValueError):
        add_to_counter("a_total", amount=-1)
    with pytest.raises(ValueError):
        add_to_counter("bad name")
    with pytest.raises(ValueError):
        add_to_counter("a_total", {"bad-label": "x"})
    assert Counter.objects.count() == 0


@pytest.mark.django_db
def test_it_snapshots_current_values_with_notes_flagged_as_gaps():
    add_to_counter("a_total", amount=4)
    add_to_counter("b_total", amount=9)
    a, b = Counter.objects.order_by("name")

    assert snapshot_counters([a.id, b.id, a.id], notes={b.id: "gap"}, run_id="agg_1") == 2

    snapshots = {s.counter.name: s for s in CounterSnapshot.objects.select_related("counter")}
    assert (snapshots["a_total"].value, snapshots["a_total"].gap, snapshots["a_total"].note) == (4, False, "")
    assert (snapshots["b_total"].value, snapshots["b_total"].gap, snapshots["b_total"].note) == (9, True, "gap")
    assert {s.run_id for s in snapshots.values()} == {"agg_1"}


@pytest.mark.django_db(transaction=True)
def test_it_loses_no_increment_when_threads_race():
    threads_n, per_thread = 4, 50

    def work():
        try:
            for _ in range(per_thread):
                add_to_counter("race_total", {"kind": "x"})
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert counter_value("race_total", {"kind": "x"}) == threads_n * per_thread
    assert Counter.objects.filter(name="race_total").count() == 1
