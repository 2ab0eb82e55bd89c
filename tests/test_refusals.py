"""Refused handshakes, counted without I/O on the handshake and exposed fleet-wide on /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry import refusals


async def test_refusals_are_counted_in_memory_and_written_in_one_flush(redis_client):
    for _ in range(3):
        refusals.count(refusals.BAD_CREDENTIALS)
    refusals.count(refusals.RECONNECTING_TOO_FAST)

    assert redis_client.hgetall(refusals.KEY) == {}
    await refusals.flush()

    assert refusals.totals(redis_client) == {"bad_credentials": 3, "reconnecting_too_fast": 1, "server_shutdown": 0}


@pytest.mark.django_db
def test_metrics_expose_every_reason_including_those_never_seen(client, redis_client):
    redis_client.hincrby(refusals.KEY, refusals.BAD_CREDENTIALS, 7)

    body = client.get("/metrics").content.decode()

    samples = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "telemetry_handshakes_refused"
        for sample in family.samples
    }
    assert samples == {"bad_credentials": 7, "reconnecting_too_fast": 0, "server_shutdown": 0}
