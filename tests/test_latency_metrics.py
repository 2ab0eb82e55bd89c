"""/metrics after a short session: the four latency histograms of the process, and the aggregation figures."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from channels.db import database_sync_to_async

from metrics.aggregation import aggregate_mission_metrics
from tests.servers import ServerProcess
from tests.test_prometheus import samples
from tests.test_robot_ws_e2e import robot_socket, telemetry

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def scrape(server: ServerProcess) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as response:
        return samples(response.read())


async def test_after_a_short_session_metrics_show_the_four_histograms_and_the_aggregation_figures(r2d2, tmp_path):
    server = ServerProcess.daphne(tmp_path)
    try:
        async with robot_socket(server, "r2d2", r2d2.token) as ws:
            for seq in range(1, 33):
                await ws.send(telemetry(seq))
                assert json.loads(await ws.recv())["type"] == "ack"
                await asyncio.sleep(0.06)  # under the 20 frames/s limit
        await asyncio.sleep(1.5)  # the history's database flush, about once a second
        await database_sync_to_async(aggregate_mission_metrics)()
        figures = await database_sync_to_async(scrape)(server)
    finally:
        server.stop()
    assert figures[("telemetry_handshake_duration_seconds_count", ())] == 1
    assert figures[("telemetry_ack_latency_seconds_count", ())] == 2  # one frame in 16
    assert figures[("telemetry_flush_duration_seconds_count", (("stage", "redis"),))] > 0
    assert figures[("telemetry_flush_duration_seconds_count", (("stage", "db"),))] > 0
    assert figures[("telemetry_fanout_lag_seconds_count", ())] > 0
    assert 0 < figures[("telemetry_ack_latency_seconds_sum", ())] < 1
    assert figures[("metrics_aggregation_runs_total", (("result", "completed"),))] == 1
    assert figures[("metrics_aggregation_runs_total", (("result", "failed"),))] == 0
    assert figures[("metrics_aggregation_last_duration_seconds", ())] > 0
