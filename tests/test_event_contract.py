"""The event contract 1.0.0 end to end: what lands on the shared stream, how often, and who can read it."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from fleet.events.envelope import stream_fields
from fleet.events.schema import CHARTER_SCHEMAS, payload_errors
from fleet.events.stream import get_publisher, reset_publisher
from metrics.aggregation import aggregate_mission_metrics
from telemetry.connections import get_registry
from tests.servers import BASE_DIR, child_env
from tests.test_robot_ws import GOOD, connected, registry, send, telemetry  # noqa: F401 (fixture: hangs up and stops)
from tests.test_telemetry_api import report

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def publisher():
    reset_publisher()
    yield get_publisher()
    reset_publisher()


@pytest.fixture
def api(client, operator):
    client.force_login(operator)
    return client


def stream(redis_client) -> list[dict]:
    """Every entry's fields, decoded, in stream order."""
    return [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _, fields in redis_client.xrange(settings.FLEET_EVENT_STREAM)
    ]


def published_count(redis_client) -> int:
    return [fields["type"] for fields in stream(redis_client)].count("telemetry.metrics_published")


@pytest.mark.usefixtures("registry")
async def test_a_session_a_read_and_two_runs_put_all_six_events_on_the_stream(r2d2, api, redis_client, publisher):
    live = get_registry()
    socket = await connected(r2d2)
    assert await send(socket, telemetry(1)) == {"type": "ack", "seq": 1}
    await live.drain()
    assert (await sync_to_async(api.get)("/api/telemetry/robots/r2d2/metrics")).status_code == 200
    await socket.disconnect()
    await sync_to_async(aggregate_mission_metrics)()
    redis_client.set(settings.FLEET_MISSION_STREAM, "not a stream")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await sync_to_async(aggregate_mission_metrics)()
    assert await asyncio.to_thread(publisher.flush, 5)

    envelopes = {fields["type"]: json.loads(fields["data"]) for fields in stream(redis_client)}
    assert sorted(envelopes) == sorted(CHARTER_SCHEMAS)
    for event_type, envelope in envelopes.items():
        payload = envelope["payload"]
        assert payload_errors(event_type, payload) == [], event_type
        assert type(payload["timestamp"]) is float
        assert abs(payload["timestamp"] - time.time()) < 5
        assert not {"started_at", "completed_at", "failed_at", "connected_at", "disconnected_at", "published_at"} & set(
            payload
        )
    assert envelopes["telemetry.metrics_published"]["payload"]["metrics"] == GOOD


@pytest.mark.usefixtures("registry")
async def test_ten_frames_over_two_seconds_with_nobody_reading_publish_no_metrics(r2d2, redis_client, publisher):
    live = get_registry()
    socket = await connected(r2d2)
    for seq in range(10):
        assert await send(socket, telemetry(seq)) == {"type": "ack", "seq": seq}
        await asyncio.sleep(0.2)
    await live.drain()
    await socket.disconnect()
    assert await asyncio.to_thread(publisher.flush, 5)

    types = [fields["type"] for fields in stream(redis_client)]
    assert types == ["telemetry.connection_established", "telemetry.connection_closed"]


def test_two_reads_of_one_robot_within_the_interval_publish_once(api, redis_client, r2d2, publisher):
    report(redis_client, "r2d2", GOOD, time.time(), 1)

    started = time.monotonic()
    assert api.get("/api/telemetry/robots/r2d2/metrics").status_code == 200
    assert api.get("/api/telemetry/robots/r2d2/metrics").status_code == 200
    assert time.monotonic() - started < 0.3
    assert publisher.flush(timeout=5)

    assert published_count(redis_client) == 1


def test_a_read_after_the_interval_publishes_again(api, redis_client, r2d2, publisher, settings):
    settings.TELEMETRY_PUBLISH_MIN_INTERVAL = 0.2
    report(redis_client, "r2d2", GOOD, time.time(), 1)

    api.get("/api/telemetry/robots/r2d2/metrics")
    time.sleep(0.3)
    api.get("/api/telemetry/robots/r2d2/metrics")
    assert publisher.flush(timeout=5)

    assert published_count(redis_client) == 2


def test_the_interval_holds_across_processes(api, redis_client, r2d2, publisher):
    report(redis_client, "r2d2", GOOD, time.time(), 1)
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from telemetry.publishing import claim; print(claim('r2d2'))",
        ],
        cwd=BASE_DIR,
        env=child_env(DJANGO_SETTINGS_MODULE="fleet.settings", TELEMETRY_PUBLISH_MIN_INTERVAL="60"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.stdout.strip() == "True", other.stderr

    assert api.get("/api/telemetry/robots/r2d2/metrics").status_code == 200
    assert publisher.flush(timeout=5)

    assert published_count(redis_client) == 0


# --- version ------------------------------------------------------------------------------------


def test_info_schema_metrics_and_pyproject_all_say_1_0_0(client):
    from setuptools.config.pyprojecttoml import read_configuration

    assert client.get("/api/telemetry/info").json()["version"] == "1.0.0"
    assert re.search(r"^  version: 1\.0\.0$", client.get("/api/schema/").content.decode(), re.MULTILINE)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").content.decode())}
    [sample] = families["fleet_build_info"].samples
    assert sample.labels == {"version": "1.0.0", "python": sys.version.split()[0]}
    assert sample.value == 1
    with warnings.catch_warnings():  # older setuptools call their [tool.setuptools] support beta
        warnings.simplefilter("ignore")
        assert read_configuration(BASE_DIR / "pyproject.toml")["project"]["version"] == "1.0.0"


# --- the platform's readers ---------------------------------------------------------------------


def documented_reader() -> dict:
    """The reader functions of docs/compatibility.md, run as written there."""
    text = (Path(BASE_DIR) / "docs" / "compatibility.md").read_text()
    code = re.search(r"<!-- tests/test_event_contract.py runs this function.*?-->\n```python\n(.*?)```", text, re.S)
    namespace: dict = {}
    exec(code.group(1), namespace)
    return namespace


def test_an_entry_carries_the_platform_s_per_key_fields_beside_data(redis_client, publisher):
    from telemetry import signals

    signals.connection_established.send(sender=None, robot_id="r2d2", connection_id="ws_r2d2_1_abcd", timestamp=1.5)
    assert publisher.flush(timeout=5)

    [fields] = stream(redis_client)
    envelope = json.loads(fields["data"])
    assert set(fields) == {"type", "data", "id", "source", "timestamp", "payload", "meta"}  # target is null
    assert fields["id"] == envelope["id"]
    assert fields["source"] == "telemetry_service"
    assert json.loads(fields["payload"]) == envelope["payload"]
    assert json.loads(fields["meta"]) == envelope["meta"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", fields["timestamp"])


def test_the_documented_reader_reads_real_entries_of_both_layouts(redis_client, publisher):
    from telemetry import signals

    reader = documented_reader()
    signals.connection_established.send(sender=None, robot_id="r2d2", connection_id="ws_r2d2_1_abcd", timestamp=1.5)
    assert publisher.flush(timeout=5)
    [(_, new_entry)] = redis_client.xrange(settings.FLEET_EVENT_STREAM)
    envelope = json.loads(new_entry[b"data"])
    # An entry written before the per-key fields: only type and data.
    old = stream_fields(envelope)
    redis_client.xadd(settings.FLEET_EVENT_STREAM, {"type": old["type"], "data": old["data"]})
    [_, (_, old_entry)] = redis_client.xrange(settings.FLEET_EVENT_STREAM)

    event = reader["read_entry"](new_entry)
    assert event == {
        **envelope,
        "target": None,
        "timestamp": new_entry[b"timestamp"].decode(),
    }
    assert event["payload"] == {"robot_id": "r2d2", "connection_id": "ws_r2d2_1_abcd", "timestamp": 1.5}
    assert reader["read_entry"](old_entry) == envelope
    assert reader["is_fleet_event"](event) is True
    assert reader["is_fleet_event"]({"type": "mission.completed"}) is False
