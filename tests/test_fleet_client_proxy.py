"""The client library behind a proxy: restarts it answers 502 for, and a network that goes silent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time

import pytest

from fleet_client import ClientEvent, RobotClient
from telemetry.robots import create_robot
from tests.servers import ServerProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Gateway:
    """nginx with one upstream, in miniature: pipes each connection to the server, or answers 502 when it is down."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.bad_gateways = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        # Set: bytes stop flowing either way, as on a network that drops everything, and no connection closes.
        self.silent = asyncio.Event()

    async def start(self) -> Gateway:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            self.bad_gateways += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(BAD_GATEWAY)
            await writer.drain()
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if self.silent.is_set():
                    continue
                writer.write(data)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            await self.server.wait_closed()


@pytest.fixture
def r2d2_token(transactional_db) -> str:
    return create_robot("r2d2")[1]


async def test_after_a_1001_it_retries_a_502ing_proxy_every_few_seconds_not_at_the_full_backoff(
    r2d2_token, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="fleet_client")
    port = free_port()
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path, port)
    gateway = await Gateway(port).start()
    events: list[tuple[float, ClientEvent]] = []
    client = RobotClient(
        url=f"ws://127.0.0.1:{gateway.port}",
        robot_id="r2d2",
        token=r2d2_token,
        on_event=lambda event: event.kind != "acked" and events.append((time.monotonic(), event)),
    )
    client.restart_backoff_cap = 0.25  # the same policy, shorter waits for the test
    await client.start()
    try:
        client.submit(GOOD)
        assert await client.flush(timeout=10)
        caplog.clear()
        server.signal(signal.SIGTERM)  # the robot gets 1001, then 502s until the replacement is up
        assert await asyncio.to_thread(server.wait, 20) == 0
        for _ in range(3):
            client.submit(GOOD)
        server = await asyncio.to_thread(ServerProcess.daphne, tmp_path, port)
        back_at = time.monotonic()
        assert await client.flush(timeout=10)
        flushed_after = time.monotonic() - back_at
    finally:
        await client.close()
        await gateway.stop()
        server.stop()
    waits = [float(wait) for wait in re.findall(r"reconnecting in ([\d.]+) s", caplog.text)]
    kinds = [(event.kind, event.code) for _, event in events]

    assert kinds[:2] == [("connected", None), ("disconnected", 1001)]
    # A stopping daphne may still take a handshake, and drop it or close it with 1001 again.
    assert set(kinds[2:-1]) <= {("connect_failed", 502), ("connect_failed", None), *kinds[:2]}
    assert ("connect_failed", 502) in kinds
    assert kinds[-1] == ("connected", None)
    # Without the restart cap these waits double each time (0.5, 1, 2, 4 s … up to a minute).
    assert waits[0] == 0.0 and max(waits) <= 0.25, waits
    assert gateway.bad_gateways >= 3
    assert flushed_after < 2.0
    assert client.stats["acked"] == client.stats["submitted"] == 4


async def test_close_gives_up_on_a_server_that_stopped_answering_after_two_seconds(r2d2_token, tmp_path):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path)
    gateway = await Gateway(server.port).start()
    client = RobotClient(url=f"ws://127.0.0.1:{gateway.port}", robot_id="r2d2", token=r2d2_token)
    await client.start()
    try:
        client.submit(GOOD)
        assert await client.flush(timeout=10)
        gateway.silent.set()
        started = time.monotonic()
        await client.close()
        closing = time.monotonic() - started
    finally:
        await gateway.stop()
        server.stop()

    # websockets' own default would wait 10 s for the server's half of the close handshake.
    assert 1.9 <= closing < 4.0
    assert RobotClient.close_timeout == 2.0
