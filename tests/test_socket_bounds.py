"""What one robot socket may make a daphne process hold: real daphne, real sockets that misbehave."""

from __future__ import annotations

import hashlib
import inspect
import json
import time

import pytest
from daphne.ws_protocol import WebSocketProtocol

from telemetry.models import RobotSession
from tests.raw_socket import RawWebSocket
from tests.servers import ServerProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_written")]

IDLE_TIMEOUT = 12.0
GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
# 100 frames that each get an error reply: about 9 KiB of replies for 300 bytes sent.
ERROR_BATCH = json.dumps({"type": "telemetry_batch", "frames": [{}] * 100})


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One daphne with a short idle timeout, and the frame limits out of the way of the bounds under test."""
    with django_db_blocker.unblock():
        process = ServerProcess.daphne(
            tmp_path_factory.mktemp("daphne"),
            TELEMETRY_IDLE_TIMEOUT=str(IDLE_TIMEOUT),
            TELEMETRY_MAX_FRAMES_PER_SECOND="100000",
            TELEMETRY_MAX_INVALID_FRAMES="100000",
        )
    yield process
    process.stop()


def closed_session(robot_id: str, within: float) -> RobotSession | None:
    return wait_for(
        lambda: RobotSession.objects.filter(robot__robot_id=robot_id, disconnected_at__isnull=False).first(), within
    )


def test_a_robot_that_never_reads_is_closed_with_1013(server, r2d2):
    ws = RawWebSocket(server.port, "/api/telemetry/ws/r2d2", r2d2.token)
    assert ws.status == 101

    for _ in range(1000):  # up to 9 MiB of replies
        if not ws.send_text(ERROR_BATCH):
            break
    session = closed_session("r2d2", within=15)
    ws.close()

    assert (session.close_code, session.reason) == (1013, "overloaded")
    assert session.frames_rejected < 100_000


def test_a_robot_that_sends_but_never_answers_pings_is_dropped_within_the_idle_timeout(server, r2d2):
    ws = RawWebSocket(server.port, "/api/telemetry/ws/r2d2", r2d2.token)
    assert ws.status == 101
    opened = time.monotonic()

    # Two valid frames a second: daphne used to take each for a sign of life and never ping.
    while time.monotonic() - opened < IDLE_TIMEOUT + 5 and ws.send_text(json.dumps({"type": "telemetry", **GOOD})):
        time.sleep(0.5)
    dropped_after = time.monotonic() - opened
    session = closed_session("r2d2", within=3)
    ws.close()

    assert dropped_after <= IDLE_TIMEOUT
    assert session is not None
    assert session.frames_accepted >= 2


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        # BoundedProtocol.onMessage is daphne's without the reset of last_ping, which check_timeouts reads.
        ("onMessage", "826cc86d0e2aeef0"),
        ("check_timeouts", "0e2ee6816a93a598"),
    ],
)
def test_the_daphne_methods_the_bounds_rely_on_are_the_ones_they_were_written_against(function, expected):
    # A changed fingerprint means daphne changed: carry the change into fleet.socket_bounds, then update it.
    source = inspect.getsource(getattr(WebSocketProtocol, function))
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == expected
