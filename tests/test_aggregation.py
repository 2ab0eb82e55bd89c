"""The mission aggregation: every entry of the stream counted exactly once (real Redis, real database)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from metrics import aggregation
from metrics.aggregation import aggregate_mission_metrics
from metrics.models import Counter, CounterSnapshot, StreamCursor
from metrics.signals import aggregation_completed, aggregation_failed, aggregation_started
from tests.conftest import counter_value
from tests.servers import BASE_DIR, child_env

STATUSES = ["completed", "failed", "in_progress", "cancelled"]


def add_missions(client, count: int, start: int = 0) -> list[str]:
    """Append `count` valid entries, statuses cycling through STATUSES; returns their IDs."""
    pipe = client.pipeline(transaction=False)
    for n in range(start, start + count):
        payload = {"mission_id": f"m-{n}", "status": STATUSES[n % len(STATUSES)]}
        pipe.xadd(settings.FLEET_MISSION_STREAM, {"data": json.dumps(payload)})
    return [entry_id.decode() for entry_id in pipe.execute()]


def status_counts() -> dict[str, int]:
    return {counter.labels["status"]: counter.value for counter in Counter.objects.filter(name="mission_status_total")}


def redis_major(client) -> int:
    return int(client.info("server")["redis_version"].split(".")[0])


@pytest.fixture
def events():
    """Every aggregation signal sent during the test, as (signal name, sender, payload kwargs)."""
    captured: list[tuple[str, object, dict]] = []
    receivers = []
    for name, signal in [
        ("started", aggregation_started),
        ("completed", aggregation_completed),
        ("failed", aggregation_failed),
    ]:

        def receiver(sender, _name=name, **kwargs):
            kwargs.pop("signal")
            captured.append((_name, sender, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield captured
    for signal, receiver in receivers:
        signal.disconnect(receiver)


@pytest.mark.django_db
def test_it_counts_1000_mixed_entries_exactly(redis_client):
    ids = add_missions(redis_client, 1000)

    result = aggregate_mission_metrics(batch_size=300)

    assert status_counts() == {"completed": 250, "failed": 250, "in_progress": 250, "cancelled": 250}
    assert (result.entries_processed, result.entries_skipped, result.last_id) == (1000, 0, ids[-1])
    assert StreamCursor.objects.get(stream=settings.FLEET_MISSION_STREAM).last_id == ids[-1]
    assert counter_value("mission_entries_invalid_total") == 0


@pytest.mark.django_db
def test_it_counts_each_entry_once_across_reruns(redis_client):
    add_missions(redis_client, 1000)
    aggregate_mission_metrics()

    rerun = aggregate_mission_metrics()
    assert rerun.entries_processed == 0
    assert sum(status_counts().values()) == 1000

    add_missions(redis_client, 10, start=1000)
    more = aggregate_mission_metrics()
    assert more.entries_processed == 10
    assert status_counts() == {"completed": 253, "failed": 253, "in_progress": 252, "cancelled": 252}


@pytest.mark.django_db
def test_it_counts_invalid_entries_apart(redis_client):
    stream = settings.FLEET_MISSION_STREAM
    redis_client.xadd(stream, {"other": "no data field"})
    redis_client.xadd(stream, {"data": "{not json"})
    redis_client.xadd(stream, {"data": b"\xff\xfe not utf-8"})
    redis_client.xadd(stream, {"data": json.dumps(["a", "list"])})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-1"})})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-2", "status": 3})})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-3", "status": None})})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-4", "status": "x" * 65})})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-5", "status": "y" * 64})})
    redis_client.xadd(stream, {"data": json.dumps({"mission_id": "m-6", "status": "completed"})})
    redis_client.xadd(stream, {"data": '{"status": "completed"} and more'})
    redis_client.xadd(stream, {"mission_id": "m-7", "data": ' {"status": "completed"}\n'})

    result = aggregate_mission_metrics()

    assert (result.entries_processed, result.entries_skipped) == (12, 9)
    assert counter_value("mission_entries_invalid_total") == 9
    assert status_counts() == {"y" * 64: 1, "completed": 2}


@pytest.mark.django_db
def test_it_reads_at_most_max_entries_per_run_in_batches(redis_client):
    ids = add_missions(redis_client, 250)

    first = aggregate_mission_metrics(batch_size=40, max_entries=100)
    second = aggregate_mission_metrics(batch_size=40, max_entries=1000)

    assert (first.entries_processed, first.last_id) == (100, ids[99])
    assert (second.entries_processed, second.last_id) == (150, ids[-1])
    assert sum(status_counts().values()) == 250


@pytest.mark.django_db
def test_an_idle_run_makes_one_redis_call_and_writes_only_its_run_figures(redis_client, django_assert_num_queries):
    add_missions(redis_client, 5)
    aggregate_mission_metrics()
    snapshots = CounterSnapshot.objects.count()
    calls: list[tuple] = []
    execute_command = redis_client.execute_command

    def counting(*args, **options):
        calls.append(args[:1])
        return execute_command(*args, **options)

    redis_client.execute_command = counting
    # Receivers of aggregation_completed (the dashboards' push) are connected too: the whole run counts.
    try:
        with django_assert_num_queries(2) as queries:
            result = aggregate_mission_metrics(redis=redis_client)
    finally:
        del redis_client.execute_command

    assert calls == [("XRANGE",)]
    assert queries.captured_queries[0]["sql"].startswith("SELECT")
    assert queries.captured_queries[1]["sql"].startswith('UPDATE "metrics_jobruns"')
    assert result.entries_processed == 0
    assert CounterSnapshot.objects.count() == snapshots


@pytest.mark.django_db
def test_it_snapshots_each_changed_counter_once_at_the_end_of_a_run(redis_client):
    add_missions(redis_client, 10)
    redis_client.xadd(settings.FLEET_MISSION_STREAM, {"data": "bad"})

    result = aggregate_mission_metrics(batch_size=3)

    snapshots = sorted(
        (s.counter.name, s.counter.labels.get("status"), s.value)
        for s in CounterSnapshot.objects.select_related("counter")
    )
    assert snapshots == [
        ("mission_entries_invalid_total", None, 1),
        ("mission_status_total", "cancelled", 2),
        ("mission_status_total", "completed", 3),
        ("mission_status_total", "failed", 3),
        ("mission_status_total", "in_progress", 2),
    ]
    assert {s.run_id for s in CounterSnapshot.objects.all()} == {result.run_id}
    assert result.counters == [
        {"name": "mission_entries_invalid_total", "labels": {}, "value": 1},
        {"name": "mission_status_total", "labels": {"status": "cancelled"}, "value": 2},
        {"name": "mission_status_total", "labels": {"status": "completed"}, "value": 3},
        {"name": "mission_status_total", "labels": {"status": "failed"}, "value": 3},
        {"name": "mission_status_total", "labels": {"status": "in_progress"}, "value": 2},
    ]
    assert aggregate_mission_metrics().counters == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_in_threads_never_double_count(redis_client):
    # Enough batches that neither thread can finish them all before the other starts, even on a busy machine.
    add_missions(redis_client, 5000)
    barrier = threading.Barrier(2)
    results = []
    errors = []

    def run():
        try:
            barrier.wait()
            results.append(aggregate_mission_metrics(batch_size=10))
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    processed = [result.entries_processed for result in results]
    assert sum(processed) == 5000
    assert min(processed) > 0, f"the two runs did not overlap: {processed}"
    assert status_counts() == {"completed": 1250, "failed": 1250, "in_progress": 1250, "cancelled": 1250}


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_in_processes_never_double_count(redis_client):
    add_missions(redis_client, 1000)
    # One entry per batch, so the second process starts while the first is still counting.
    command = [sys.executable, "manage.py", "aggregate_metrics", "--batch-size", "1"]
    children = [
        subprocess.Popen(command, cwd=BASE_DIR, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=120)[0].decode() for child in children]

    assert [child.returncode for child in children] == [0, 0], outputs
    processed = [int(output.strip().splitlines()[-1].split()[1]) for output in outputs]
    assert sum(processed) == 1000, outputs
    assert min(processed) > 0, f"the two runs did not overlap: {outputs}"
    assert status_counts() == {"completed": 250, "failed": 250, "in_progress": 250, "cancelled": 250}


@pytest.mark.django_db
def test_a_crash_after_the_first_batch_then_a_rerun_counts_exactly(redis_client, monkeypatch, events):
    ids = add_missions(redis_client, 100)
    commit_batch = aggregation._commit_batch
    commits = []

    def crash_after_first_commit(*args, **kwargs):
        outcome = commit_batch(*args, **kwargs)
        commits.append(outcome)
        if len(commits) == 1:
            raise RuntimeError("worker died after the first batch")
        return outcome

    monkeypatch.setattr(aggregation, "_commit_batch", crash_after_first_commit)
    with pytest.raises(RuntimeError):
        aggregate_mission_metrics(batch_size=30)

    assert StreamCursor.objects.get().last_id == ids[29]
    assert sum(status_counts().values()) == 30
    assert [name for name, _, _ in events] == ["started", "failed"]

    rerun = aggregate_mission_metrics(batch_size=30)

    assert rerun.entries_processed == 70
    assert status_counts() == {"completed": 25, "failed": 25, "in_progress": 25, "cancelled": 25}


@pytest.mark.django_db
def test_a_stream_trimmed_past_the_cursor_is_recorded_and_never_double_counted(redis_client, caplog):
    stream = settings.FLEET_MISSION_STREAM
    add_missions(redis_client, 100)
    aggregate_mission_metrics()
    ids = add_missions(redis_client, 100, start=100)
    # A producer trimming hard: the 40 oldest of the new entries go before they were counted.
    redis_client.xtrim(stream, maxlen=60, approximate=False)

    result = aggregate_mission_metrics(batch_size=25)

    assert result.entries_processed == 60
    assert sum(status_counts().values()) == 160
    assert len(result.gaps) == 1
    assert result.gaps[0].first_id == ids[40]
    assert "stream trimmed past the cursor" in caplog.text
    lost = Counter.objects.get(name="mission_entries_lost_total")
    snapshot = CounterSnapshot.objects.get(counter=lost)
    assert snapshot.gap is True
    if redis_major(redis_client) >= 7:
        # XINFO STREAM's entries-added tells exactly how many were trimmed after the cursor.
        assert (result.entries_lost, lost.value, snapshot.value) == (40, 40, 40)
        assert snapshot.note.endswith(": 40 entries lost")
    else:
        # Redis 6 cannot tell how many: the gap is flagged in the snapshot note instead.
        assert (result.entries_lost, lost.value) == (0, 0)
        assert snapshot.note.endswith("count unknown (Redis < 7)")

    add_missions(redis_client, 10, start=200)
    after = aggregate_mission_metrics()
    assert (after.entries_processed, after.gaps) == (10, [])
    assert sum(status_counts().values()) == 170
    if redis_major(redis_client) >= 7:
        assert counter_value("mission_entries_lost_total") == 40


@pytest.mark.django_db
def test_trimming_only_counted_entries_is_not_a_gap(redis_client):
    stream = settings.FLEET_MISSION_STREAM
    add_missions(redis_client, 50)
    aggregate_mission_metrics()
    redis_client.xtrim(stream, maxlen=0, approximate=False)
    add_missions(redis_client, 5, start=50)

    result = aggregate_mission_metrics()

    assert (result.entries_processed, result.entries_lost) == (5, 0)
    assert sum(status_counts().values()) == 55
    if redis_major(redis_client) >= 7:
        assert result.gaps == []  # max-deleted-entry-id is the cursor itself: nothing uncounted went
    else:
        # Redis 6 can't tell "trimmed up to the cursor" from "trimmed past it": flagged as possible, never counted.
        assert [gap.lost for gap in result.gaps] == [None]
        assert counter_value("mission_entries_lost_total") == 0


@pytest.mark.django_db
def test_a_first_run_on_a_stream_trimmed_before_it_counts_what_remains(redis_client):
    add_missions(redis_client, 30)
    redis_client.xtrim(settings.FLEET_MISSION_STREAM, maxlen=20, approximate=False)

    result = aggregate_mission_metrics()

    assert result.entries_processed == 20
    assert sum(status_counts().values()) == 20
    if redis_major(redis_client) >= 7:
        assert (result.entries_lost, counter_value("mission_entries_lost_total")) == (10, 10)
    else:
        assert (result.entries_lost, result.gaps) == (0, [])


@pytest.mark.django_db
def test_the_three_events_carry_exact_payloads(redis_client, events):
    ids = add_missions(redis_client, 7)
    redis_client.xadd(settings.FLEET_MISSION_STREAM, {"data": "oops"})

    result = aggregate_mission_metrics()

    (started_name, started_sender, started), (completed_name, completed_sender, completed) = events
    assert (started_name, completed_name) == ("started", "completed")
    assert started_sender is aggregate_mission_metrics and completed_sender is aggregate_mission_metrics
    assert set(started) == {"job_id", "run_id", "timestamp"}
    assert started["job_id"] == "aggregate_mission_metrics"
    assert started["run_id"] == result.run_id
    assert isinstance(started["timestamp"], float)
    assert set(completed) == {
        "job_id",
        "run_id",
        "entries_processed",
        "entries_skipped",
        "duration_ms",
        "timestamp",
        "last_id",
        "counters",
    }
    assert (completed["job_id"], completed["run_id"]) == ("aggregate_mission_metrics", result.run_id)
    assert completed["counters"] == result.counters and len(result.counters) == 5
    assert (completed["entries_processed"], completed["entries_skipped"]) == (8, 1)
    assert completed["last_id"] == StreamCursor.objects.get().last_id
    assert completed["last_id"] != ids[-1]  # the invalid entry came last and moved the cursor too
    assert isinstance(completed["duration_ms"], float) and completed["duration_ms"] > 0
    assert isinstance(completed["timestamp"], float) and completed["timestamp"] >= started["timestamp"]

    events.clear()
    redis_client.delete(settings.FLEET_MISSION_STREAM)
    redis_client.set(settings.FLEET_MISSION_STREAM, "not a stream")
    with pytest.raises(Exception) as raised:
        aggregate_mission_metrics()

    (started_name, _, started), (failed_name, failed_sender, failed) = events
    assert (started_name, failed_name) == ("started", "failed")
    assert failed_sender is aggregate_mission_metrics
    assert set(failed) == {"job_id", "run_id", "error_message", "error_type", "timestamp"}
    assert (failed["job_id"], failed["run_id"]) == ("aggregate_mission_metrics", started["run_id"])
    assert failed["error_type"] == "ResponseError" == type(raised.value).__name__
    assert failed["error_message"] == str(raised.value) and "WRONGTYPE" in failed["error_message"]
    assert isinstance(failed["timestamp"], float)


@pytest.mark.django_db
def test_an_empty_stream_completes_with_a_null_last_id(events):
    result = aggregate_mission_metrics()

    assert result.last_id is None
    assert events[-1][0] == "completed"
    assert events[-1][2]["last_id"] is None
    assert (events[-1][2]["entries_processed"], events[-1][2]["entries_skipped"]) == (0, 0)
    assert StreamCursor.objects.count() == 0


@pytest.mark.django_db
def test_the_command_runs_once_and_prints_one_line(redis_client, capsys):
    ids = add_missions(redis_client, 12)

    call_command("aggregate_metrics", "--batch-size", "5")

    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aggregated 12 entries (0 skipped) in ")
    assert lines[0].endswith(f"4 counters changed; cursor at {ids[-1]}")


@pytest.mark.django_db(transaction=True)
def test_the_command_prints_its_summary_once_with_logging_on(redis_client):
    add_missions(redis_client, 12)
    command = [sys.executable, "manage.py", "aggregate_metrics", "--batch-size", "5"]

    output = subprocess.run(
        command, cwd=BASE_DIR, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120
    ).stdout.decode()

    assert output.count("aggregated 12 entries") == 1, output
