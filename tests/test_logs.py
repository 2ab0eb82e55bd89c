"""Logs: INFO lines for a robot's connect and close, tagged with robot_id and connection_id; JSON format."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fleet.logs import JsonFormatter
from tests.servers import ServerProcess
from tests.test_robot_ws import GOOD, connected, registry, send  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_robots_connect_and_close_are_logged_at_info_with_its_ids(r2d2, registry, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="telemetry.consumers")
    socket = await connected(r2d2)
    assert (await send(socket, {"type": "telemetry", "seq": 1, **GOOD}))["type"] == "ack"
    await socket.disconnect()
    await registry.stop()

    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    connection_id = lines[0]["connection_id"]
    assert connection_id.startswith("ws_r2d2_")
    assert [(line["level"], line["logger"]) for line in lines] == [("INFO", "telemetry.consumers")] * 2
    assert lines[0]["message"] == "robot r2d2 connected"
    assert lines[1]["message"].startswith("robot r2d2 closed: client_disconnect (code 1000) after ")
    assert lines[1]["message"].endswith("; 1 frames accepted, 0 rejected")
    assert {(line["robot_id"], line["connection_id"]) for line in lines} == {("r2d2", connection_id)}


def test_json_lines_are_one_object_per_line_even_with_newlines_and_tracebacks():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord("fleet.test", logging.ERROR, __file__, 1, "failed: %s", ("x\ny",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "fleet.test", "failed: x\ny")
    assert entry["exc_info"].endswith("ValueError: bad\nvalue")
    assert "robot_id" not in entry


@pytest.mark.e2e
async def test_with_the_json_format_the_server_writes_only_json_lines_its_access_log_included(tmp_path):
    server = ServerProcess.daphne(tmp_path, DJANGO_LOG_FORMAT="json")
    try:
        with pytest.raises(InvalidStatus):  # no such robot: 403
            async with connect(f"{server.ws_url}/api/telemetry/ws/nobody?token=nope"):
                pass
        await asyncio.sleep(0.2)
    finally:
        server.stop()
    entries = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    access = [entry["message"] for entry in entries if entry["logger"] == "fleet.access"]
    assert any(re.fullmatch(r'127\.0\.0\.1:\d+ "GET /healthz" 200 49', message) for message in access)
    assert any(re.fullmatch(r'127\.0\.0\.1:\d+ "WSREJECT /api/telemetry/ws/nobody" - -', message) for message in access)
