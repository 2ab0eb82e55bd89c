"""The client library against real servers: restarts, a killed client, failed and slow commits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.db.models import Count
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fleet.redis import get_client
from fleet_client import ClientEvent, RobotClient
from telemetry.models import Robot, TelemetrySample
from telemetry.robots import create_robot, revoke_robots
from tests.servers import BASE_DIR, ServerProcess, child_env, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
CLIENT_ENV = {"PYTHONPATH": str(BASE_DIR / "clients" / "python")}


@pytest.fixture
def r2d2_token(transactional_db) -> str:
    return create_robot("r2d2")[1]


def stored_twice() -> list[dict]:
    return list(
        TelemetrySample.objects.values("robot_id", "reported_at").annotate(n=Count("id")).filter(n__gt=1).order_by()
    )


def accepted_frames(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(float(re.search(r'^telemetry_frames_total\{result="accepted"\} (\S+)$', text, re.M).group(1)))


def runfleet(tmp_path, port: int, name: str) -> ServerProcess:
    server = ServerProcess(
        [sys.executable, "manage.py", "runfleet", "--no-qcluster", "--port", str(port)],
        child_env(),
        tmp_path / f"{name}.log",
    )
    server.port = port
    server.wait_http("/healthz", timeout=60)
    return server


async def test_a_service_restart_under_20_frames_a_second_loses_nothing_and_stores_nothing_twice(r2d2_token, tmp_path):
    port = free_port()
    # The first run is the web process alone (quicker to start); its replacement is a whole `runfleet`.
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path, port)
    client = RobotClient(url=server.ws_url, robot_id="r2d2", token=r2d2_token)
    await client.start()
    try:

        async def submit_for(seconds: float) -> None:
            for _ in range(int(seconds * 20)):
                client.submit({**GOOD, "cpu_usage": 10.0})
                await asyncio.sleep(0.05)

        await submit_for(1.5)
        server.signal(signal.SIGTERM)  # robots get 1001 and everything is flushed
        stopping = asyncio.create_task(asyncio.to_thread(server.wait, 20))
        await submit_for(0.5)
        assert await stopping == 0
        replacement = asyncio.create_task(asyncio.to_thread(runfleet, tmp_path, port, "second"))
        while not replacement.done():  # the robot keeps submitting while the service is down
            client.submit({**GOOD, "cpu_usage": 20.0})
            await asyncio.sleep(0.05)
        server = await replacement
        await submit_for(1.5)
        assert await client.flush(timeout=30)
        stats = client.stats
        # Fleet-wide, in Redis, so both runs; the count reaches Redis with the next flush (50 ms) after the ack.
        accepted = await asyncio.to_thread(
            wait_for, lambda: (count := accepted_frames(server)) >= stats["submitted"] and count, 5
        )
    finally:
        await client.close()
        server.stop()
    assert stats["acked"] == stats["submitted"] >= 80
    assert (stats["dropped"], stats["rejected"], stats["buffered"], stats["stopped"]) == (0, 0, 0, None)
    assert stats["reconnects"] >= 1
    # A frame whose ack was lost in the restart may have been sent twice, never stored twice.
    assert accepted and accepted >= stats["submitted"]
    assert await database_sync_to_async(stored_twice)() == []


async def test_interrupt_breaks_the_connection_and_what_is_submitted_offline_is_backfilled(r2d2_token, tmp_path):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path)
    events: list[ClientEvent] = []
    client = RobotClient(url=server.ws_url, robot_id="r2d2", token=r2d2_token, on_event=events.append)
    try:
        await client.start()
        client.submit(dict(GOOD))
        assert await client.flush(timeout=10)
        client.interrupt(offline=1.0)
        for _ in range(5):
            client.submit(dict(GOOD))
        await asyncio.sleep(0.5)
        assert client.stats["buffered"] == 5  # offline: kept, not sent
        assert await client.flush(timeout=10)
    finally:
        await client.close()
        server.stop()
    assert [(event.kind, event.code, event.reason, event.seqs) for event in events] == [
        ("connected", None, "", ()),
        ("acked", None, "", (0,)),
        ("disconnected", None, "closed_1006", ()),
        ("connected", None, "", ()),
        ("acked", None, "", (1, 2, 3, 4, 5)),  # one backfill batch
    ]
    assert all(event.latency > 0 for event in events if event.kind == "acked")
    assert (client.stats["acked"], client.stats["reconnects"]) == (6, 1)
    assert await database_sync_to_async(TelemetrySample.objects.count)() == 6


def cli(port: int, token: str, buffer: str, tmp_path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fleet_client", "--url", f"ws://127.0.0.1:{port}", "--robot-id", "r2d2"]
        + ["--buffer-path", buffer, "--flush-timeout", "20"],
        env={**os.environ, **CLIENT_ENV, "FLEET_ROBOT_TOKEN": token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / f"{name}.log", "wb"),
        text=True,
    )


def buffered_in(path: str) -> int:
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT count(*) FROM frames").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_client_restarted_on_its_buffer_file_delivers_every_unacked_frame(r2d2_token, tmp_path):
    port = free_port()  # nothing listens yet: every frame stays unacked
    buffer = str(tmp_path / "r2d2.buffer")
    first = cli(port, r2d2_token, buffer, tmp_path, "first")
    base = time.time() - 60
    for n in range(150):
        first.stdin.write(json.dumps({**GOOD, "ts": base + n / 10}) + "\n")
    first.stdin.flush()
    assert wait_for(lambda: buffered_in(buffer) == 150, within=10)
    first.send_signal(signal.SIGKILL)
    first.wait(5)

    server = ServerProcess.daphne(tmp_path, port=port)
    try:
        second = cli(port, r2d2_token, buffer, tmp_path, "second")
        out, _ = second.communicate("", timeout=30)  # nothing new: EOF at once, then flush
    finally:
        server.stop()
    assert second.returncode == 0, (tmp_path / "second.log").read_text()
    stats = json.loads(out)
    assert (stats["submitted"], stats["acked"], stats["buffered"], stats["dropped"]) == (0, 150, 0, 0)
    stamps = sorted(ts.timestamp() for ts in TelemetrySample.objects.values_list("reported_at", flat=True))
    assert stamps == pytest.approx([base + n / 10 for n in range(150)], abs=1e-6)


FAIL_SQLITE = """
CREATE TRIGGER fail_sample BEFORE INSERT ON telemetry_telemetrysample
WHEN NEW.cpu_usage = 13.0 BEGIN SELECT RAISE(ABORT, 'injected failure'); END
"""
FAIL_POSTGRES = [
    """CREATE FUNCTION fail_sample() RETURNS trigger AS $$ BEGIN
    IF NEW.cpu_usage = 13.0 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER fail_sample BEFORE INSERT ON telemetry_telemetrysample FOR EACH ROW EXECUTE FUNCTION fail_sample()",
]


def inject_write_failure() -> None:
    with connection.cursor() as cursor:
        for statement in [FAIL_SQLITE] if connection.vendor == "sqlite" else FAIL_POSTGRES:
            cursor.execute(statement)


def heal_write_failure() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER fail_sample")
        else:
            cursor.execute("DROP TRIGGER fail_sample ON telemetry_telemetrysample")
            cursor.execute("DROP FUNCTION fail_sample()")


async def test_a_batch_whose_write_fails_gets_no_ack_and_the_client_sends_it_again(r2d2_token, tmp_path, caplog):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path)
    await database_sync_to_async(inject_write_failure)()
    client = RobotClient(url=server.ws_url, robot_id="r2d2", token=r2d2_token)
    client.ack_timeout = 1.0
    try:
        for n in range(3):  # buffered before connecting: sent as one backfill batch
            client.submit({**GOOD, "cpu_usage": 13.0, "ts": time.time() - 10 + n})
        with caplog.at_level(logging.WARNING, logger="fleet_client"):
            await client.start()
            failed = "backfill batch not stored; not acknowledged"
            assert await asyncio.to_thread(wait_for, lambda: failed in server.output(), 10)
            assert client.stats["acked"] == 0 and client.stats["buffered"] == 3
            await database_sync_to_async(heal_write_failure)()
            assert await client.flush(timeout=15)
        assert "robot r2d2: no ack within 1 s; sending again" in caplog.messages
    finally:
        await client.close()
        server.stop()
    assert client.stats["acked"] == 3
    assert await database_sync_to_async(TelemetrySample.objects.count)() == 3


class HeldTransaction(threading.Thread):
    """A transaction that has written the robot's row and waits: the server's next commit queues behind it."""

    def __init__(self, robot_id: str) -> None:
        super().__init__(daemon=True)
        self.robot_id = robot_id
        self.holding = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        try:
            with transaction.atomic():
                Robot.objects.filter(robot_id=self.robot_id).update(name="held")
                self.holding.set()
                self.release.wait(30)
        finally:
            connection.close()


async def test_a_batch_ack_waits_for_its_commit(r2d2_token, tmp_path):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path)
    held = HeldTransaction("r2d2")
    try:
        async with connect(
            f"{server.ws_url}/api/telemetry/ws/r2d2", additional_headers={"Authorization": f"Bearer {r2d2_token}"}
        ) as ws:
            held.start()
            assert await asyncio.to_thread(held.holding.wait, 5)
            now = time.time()
            frames = [{"seq": n, "ts": now - 5 + n, **GOOD} for n in range(1, 4)]
            await ws.send(json.dumps({"type": "telemetry_batch", "frames": frames}))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.5)
            assert await database_sync_to_async(TelemetrySample.objects.count)() == 0
            held.release.set()
            assert json.loads(await asyncio.wait_for(ws.recv(), 15)) == {"type": "ack", "seq": 3, "accepted": 3}
            assert await database_sync_to_async(TelemetrySample.objects.count)() == 3
    finally:
        held.release.set()
        server.stop()


async def test_a_client_offering_only_unknown_versions_gets_403_and_the_server_says_why(r2d2_token, tmp_path):
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path)
    url = f"{server.ws_url}/api/telemetry/ws/r2d2"
    headers = {"Authorization": f"Bearer {r2d2_token}"}
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=headers, subprotocols=["fleet-telemetry.v2"])
        assert refused.value.response.status_code == 403
        assert "robot 'r2d2' refused: offers only fleet-telemetry.v2; this server speaks fleet-telemetry.v1" in (
            server.output()
        )
        async with connect(url, additional_headers=headers, subprotocols=["fleet-telemetry.v1"]) as ws:
            assert ws.subprotocol == "fleet-telemetry.v1"
        client = RobotClient(url=server.ws_url, robot_id="r2d2", token="wrong")
        await client.start()
        client.submit(dict(GOOD))
        assert await client.flush(timeout=10) is False
        assert client.stats["stopped"] == (
            "refused with HTTP 403: unknown or inactive robot, wrong token, or unsupported protocol"
        )
        await client.close()
    finally:
        server.stop()


async def test_it_waits_retry_after_on_4429_and_stops_for_good_on_4403(transactional_db, tmp_path, caplog):
    tokens = {robot_id: (await database_sync_to_async(create_robot)(robot_id))[1] for robot_id in ("r2d2", "bb8")}
    server = await asyncio.to_thread(ServerProcess.daphne, tmp_path, TELEMETRY_MAX_CONNECTS_PER_MINUTE="1")
    clients = []
    try:
        async with connect(
            f"{server.ws_url}/api/telemetry/ws/r2d2", additional_headers={"Authorization": f"Bearer {tokens['r2d2']}"}
        ):
            # r2d2's one handshake of the minute is taken: the client's gets retry_after and 4429.
            too_soon = RobotClient(url=server.ws_url, robot_id="r2d2", token=tokens["r2d2"])
            clients.append(too_soon)
            with caplog.at_level(logging.INFO, logger="fleet_client"):
                await too_soon.start()
                waits = await asyncio.to_thread(
                    wait_for,
                    lambda: re.findall(r"closed with 4429 \(rate_limited\); reconnecting in (\S+) s", caplog.text),
                    10,
                )
        assert len(waits) == 1 and 58 <= float(waits[0]) <= 62
        assert too_soon.stats["stopped"] is None

        bb8 = RobotClient(url=server.ws_url, robot_id="bb8", token=tokens["bb8"])
        clients.append(bb8)
        await bb8.start()
        bb8.submit(dict(GOOD))
        assert await bb8.flush(timeout=10)
        assert await asyncio.to_thread(wait_for, lambda: get_client().zcard("asgi:group:robot.bb8"), 5)
        await database_sync_to_async(revoke_robots)(["bb8"])
        assert await asyncio.to_thread(wait_for, lambda: bb8.stats["stopped"], 10) == (
            "closed with 4403 (revoked); not reconnecting"
        )
    finally:
        for client in clients:
            await client.close()
        server.stop()
