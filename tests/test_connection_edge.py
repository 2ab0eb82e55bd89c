"""The connection edge through real daphne: floods closed with 1008, credentials re-checked on live sockets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telemetry import refusals
from telemetry.models import Robot
from telemetry.robots import create_robot
from tests.servers import ServerProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_written")]

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One daphne that calls a flood sustained after 2 s and re-checks credentials every second."""
    with django_db_blocker.unblock():
        process = ServerProcess.daphne(
            tmp_path_factory.mktemp("daphne"),
            TELEMETRY_FLOOD_SECONDS="2",
            TELEMETRY_AUTH_RECHECK_INTERVAL="1",
            TELEMETRY_AUTH_CACHE_TTL="1",
        )
    yield process
    process.stop()


@pytest.fixture
async def r2d2_token(transactional_db) -> str:
    _, token = await database_sync_to_async(create_robot)("r2d2")
    return token


def robot_socket(server: ServerProcess, token: str, robot_id: str = "r2d2"):
    return connect(
        f"{server.ws_url}/api/telemetry/ws/{robot_id}",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=5,
    )


async def close_of(ws, within: float = 10.0) -> tuple[int | None, str | None, list[dict]]:
    """Read until the server closes: (code, reason, the messages read before)."""
    messages = []
    try:
        async with asyncio.timeout(within):
            while True:
                messages.append(json.loads(await ws.recv()))
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason, messages) if closed.rcvd else (None, None, messages)


async def test_a_socket_that_floods_for_the_sustained_time_is_closed_with_1008(server, r2d2_token):
    async with robot_socket(server, r2d2_token) as ws:
        frame = json.dumps({"type": "telemetry", **GOOD})

        async def flood() -> None:
            while True:
                await ws.send(frame)
                await asyncio.sleep(0.002)  # about 400 a second: 20 times the limit

        flooding = asyncio.create_task(flood())
        started = time.monotonic()
        code, reason, messages = await close_of(ws, within=15)
        flooding.cancel()

    assert (code, reason) == (1008, "flooding")
    # Two whole windows over five times the limit (the first one starts at the handshake).
    assert 1.5 <= time.monotonic() - started < 6
    errors = [message for message in messages if message["type"] == "error"]
    # One rate_limited error per second at most, undecoded frames have no seq.
    assert errors[0] == {
        "type": "error",
        "code": "rate_limited",
        "detail": "more than 20 frames per second",
        "seq": None,
    }
    assert len(errors) <= 4


async def test_a_rotated_token_closes_the_sockets_it_opened_with_4403(server, r2d2_token):
    async with robot_socket(server, r2d2_token) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await ws.recv()

        _, new_token = await database_sync_to_async(create_robot)("r2d2", rotate=True)
        code, reason, _ = await close_of(ws, within=5)

    assert (code, reason) == (4403, "token_rotated")
    with pytest.raises(InvalidStatus):
        async with robot_socket(server, r2d2_token):
            pass
    async with robot_socket(server, new_token) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_a_revocation_that_no_message_announced_still_closes_the_socket(server, r2d2_token):
    async with robot_socket(server, r2d2_token) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await ws.recv()

        # As if the broadcast and the channel-layer message were both lost: only the database knows.
        await database_sync_to_async(Robot.objects.filter(robot_id="r2d2").update)(is_active=False)
        code, reason, _ = await close_of(ws, within=5)

    assert (code, reason) == (4403, "revoked")


async def test_refused_handshakes_are_counted_by_reason(server, r2d2_token, redis_client):
    for token in ("wrong", None):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"{server.ws_url}/api/telemetry/ws/r2d2",
                additional_headers={"Authorization": f"Bearer {token}"} if token else {},
                open_timeout=5,
            ):
                pass
        assert refused.value.response.status_code == 403

    await asyncio.to_thread(wait_for, lambda: refusals.totals(redis_client)["bad_credentials"] >= 2, 5)
    assert refusals.totals(redis_client) == {"bad_credentials": 2, "reconnecting_too_fast": 0, "server_shutdown": 0}
