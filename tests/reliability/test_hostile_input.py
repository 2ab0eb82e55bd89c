"""Hostile input against one real daphne: each gets its exact answer, nothing is stored, memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fleet.redis import get_client
from telemetry import latest
from telemetry.flusher import FRAMES_KEY
from telemetry.models import Robot, RobotSession, TelemetrySample
from telemetry.robots import revoke_robots
from tests.reliability.fleet import (
    GOOD,
    assert_no_secret_in_logs,
    close_code,
    make_robots,
    median,
    open_many,
    open_robot,
    rss_mb,
    stream_events,
    telemetry,
)
from tests.servers import BASE_DIR, ServerProcess, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sessions_written")]

IDLE = 2.0
STALL = 4.0
ENV = {"TELEMETRY_IDLE_TIMEOUT": str(IDLE), "TELEMETRY_DASHBOARD_STALL_TIMEOUT": str(STALL)}
SECRETS: list[str] = []  # every token the module uses, looked for in the logs at the end


@pytest.fixture(scope="module")
def daphne(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile")
    with django_db_blocker.unblock():
        server = ServerProcess.daphne(tmp_path, **ENV)
    yield server
    server.stop()
    assert_no_secret_in_logs([server.log_path], SECRETS)


def robots(count: int, prefix: str) -> dict[str, str]:
    tokens = make_robots(count, prefix)
    SECRETS.extend(tokens.values())
    return tokens


def frame(**fields) -> str:
    return json.dumps({"type": "telemetry", "seq": 7, **GOOD, **fields})


def raw_frame(field: str, literal: str) -> str:
    """A frame whose `field` holds a literal JSON does not produce from Python values (NaN, 1e400, ...)."""
    return frame(**{field: 0}).replace(f'"{field}": 0', f'"{field}": {literal}')


HOSTILE_MESSAGES = [
    ("{not json", "invalid_json"),
    (b"\x00\x01binary\xff", "invalid_frame"),
    (raw_frame("cpu_usage", "NaN"), "invalid_frame"),
    (raw_frame("network_latency_ms", "Infinity"), "invalid_frame"),
    (raw_frame("memory_usage", "-Infinity"), "invalid_frame"),
    (raw_frame("network_latency_ms", "1e400"), "invalid_frame"),
    (frame(cpu_usage=100.5), "invalid_frame"),
    (frame(battery_percentage=-1), "invalid_frame"),
    (frame(network_latency_ms=-0.5), "invalid_frame"),
    (frame(seq=-1), "invalid_frame"),
    (frame(ts=1e12), "invalid_frame"),
    (frame(cpu_usage="45.2"), "invalid_frame"),
    (frame(memory_usage=True), "invalid_frame"),
    (frame(battery_percentage=None), "invalid_frame"),
    (frame(cpu_usage={"value": 1}), "invalid_frame"),
    ('{"type": "telemetry", "nested": ' + "[" * 10_000 + "]" * 10_000 + "}", "invalid_frame"),
    ("[" * 10_000 + "]" * 10_000, "invalid_frame"),
    # The largest string field a message may carry (the size limit stops anything bigger before parsing).
    (frame(cpu_usage="x" * 60_000), "invalid_frame"),
    ('{"type": "telemetry_batch", "frames": []}', "invalid_frame"),
    ('"just a string"', "invalid_frame"),
    ('{"type": "shutdown"}', "unknown_type"),
]


async def test_hostile_frames_get_their_exact_error_oversize_ones_1009_and_nothing_is_stored(daphne):
    tokens = await database_sync_to_async(robots)(1, "frames")
    robot_id, token = next(iter(tokens.items()))
    rss_before = rss_mb(daphne.process.pid)
    async with await open_robot(daphne.ws_url, robot_id, token) as ws:
        for message, code in HOSTILE_MESSAGES:
            await ws.send(message)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (reply["type"], reply["code"]) == ("error", code), (str(message)[:60], reply)
            # A ping in between: the connection stays open below the 1008 limit of invalid messages in a row.
            await ws.send('{"type": "ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
            await asyncio.sleep(0.11)  # stay under 20 messages a second: these are errors, not rate limits
        # Ten in a row end the session with 1008.
        await asyncio.sleep(1.0)
        for _ in range(10):
            await ws.send("{not json")
        assert await close_code(ws) == 1008

    oversize = [
        ("10 MB whole", "x" * 10_000_000),
        ("10 MB in 64 KiB continuation frames", ("x" * 65_536 for _ in range(160))),
        ("1 MB string field", frame(cpu_usage="x" * 1_000_000)),
    ]
    for name, message in oversize:
        async with await open_robot(daphne.ws_url, robot_id, token, max_size=None) as ws:
            try:
                await ws.send(message)
            except ConnectionClosed:
                pass
            assert await close_code(ws) == 1009, name

    await asyncio.sleep(1.5)  # past a database flush
    assert await database_sync_to_async(TelemetrySample.objects.count)() == 0
    assert latest.latest_metrics(robot_id) is None
    rejected = wait_for(lambda: int(get_client().hget(FRAMES_KEY, "rejected") or 0) >= len(HOSTILE_MESSAGES) + 10, 3)
    assert rejected and int(get_client().hget(FRAMES_KEY, "accepted") or 0) == 0
    closes = [e["payload"] for _, e in stream_events(get_client(), "telemetry.connection_closed")]
    assert [(c["reason"], c["close_code"]) for c in closes] == [("protocol_error", 1008)] + [("too_large", 1009)] * 3
    assert rss_mb(daphne.process.pid) - rss_before < 50


async def test_bad_robot_ids_credentials_and_origins_are_refused_with_403_and_leave_no_trace(daphne, operator):
    tokens = await database_sync_to_async(robots)(3, "creds")
    (mine, token), (other, other_token), (revoked, revoked_token) = tokens.items()
    await database_sync_to_async(revoke_robots)([revoked])
    api_token = (await database_sync_to_async(Token.objects.create)(user=operator)).key
    SECRETS.append(api_token)
    refused = [
        ("r%C3%B6b%C3%B6t", token, ""),  # unicode
        ("%E2%80%AEr2d2", token, ""),  # a right-to-left override
        ("..%2F..%2Fetc%2Fpasswd", token, ""),
        ("%2E%2E", token, ""),
        ("..", token, ""),
        ("x" * 10_000, token, ""),
        (mine, None, ""),
        (mine, "wrong-token", ""),
        (mine, other_token, ""),
        (mine, None, "?token=wrong-token"),
        (mine, None, f"?token={other_token}"),
        (revoked, revoked_token, ""),
    ]
    for robot_id, robot_token, query in refused:
        headers = {"Authorization": f"Bearer {robot_token}"} if robot_token else {}
        with pytest.raises(InvalidStatus) as refusal:
            await connect(f"{daphne.ws_url}/api/telemetry/ws/{robot_id}{query}", additional_headers=headers)
        assert refusal.value.response.status_code == 403, robot_id[:40]

    # The dashboard route checks the Origin even for a valid staff token.
    dashboard = f"{daphne.ws_url}/api/telemetry/fleet/ws?token={api_token}"
    for origin in ("https://evil.example", "http://127.0.0.1.evil.example", "http://127.0.0.1@evil.example"):
        with pytest.raises(InvalidStatus) as refusal:
            await connect(dashboard, additional_headers={"Origin": origin})
        assert refusal.value.response.status_code == 403, origin
    # The opaque origin of sandboxed pages and file:// is refused by daphne's WebSocket layer itself, with 400.
    with pytest.raises(InvalidStatus) as refusal:
        await connect(dashboard, additional_headers={"Origin": "null"})
    assert refusal.value.response.status_code == 400
    async with connect(dashboard, additional_headers={"Origin": daphne.base_url}) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"

    assert await database_sync_to_async(RobotSession.objects.count)() == 0
    assert get_client().keys("telemetry:*") == []
    assert stream_events(get_client()) == []


async def test_a_robot_connecting_1000_times_in_10_s_is_turned_away_with_4429_after_the_limit(daphne):
    tokens = await database_sync_to_async(robots)(1, "storm")
    robot_id, token = next(iter(tokens.items()))
    outcomes: list[str] = []

    async def attempt() -> None:
        ws = await open_robot(daphne.ws_url, robot_id, token)
        replies, code = [], None
        try:
            await ws.send('{"type": "ping"}')
        except ConnectionClosed:
            pass  # already turned away: what it was sent before the close is still there to read
        try:
            while not replies or replies[-1]["type"] != "pong":
                replies.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            await ws.close()
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
        kinds = [reply.get("code", reply["type"]) for reply in replies]
        if kinds == ["pong"] or (kinds == [] and code == 4409):
            outcomes.append("admitted")  # (and possibly replaced at once by the next admitted one)
        elif kinds == ["reconnecting_too_fast"] and replies[0]["retry_after"] > 0:
            outcomes.append(f"throttled {code}")
        else:
            outcomes.append(f"unexpected {replies} {code}")

    started = time.monotonic()

    async def at(offset: float) -> None:
        await asyncio.sleep(offset)
        await attempt()

    # One handshake every 10 ms: 1,000 in 10 s.
    await asyncio.gather(*(at(n * 0.01) for n in range(1000)))
    took = time.monotonic() - started
    assert took < 15, f"1,000 handshakes took {took:.1f} s"
    assert {outcome: outcomes.count(outcome) for outcome in set(outcomes)} == {"admitted": 30, "throttled 4429": 970}


async def test_500_silent_sockets_are_closed_at_the_idle_timeout(daphne):
    tokens = await database_sync_to_async(robots)(500, "silent")
    rss_before = rss_mb(daphne.process.pid)
    sockets = await open_many(daphne.ws_url, tokens)
    opened = time.monotonic()
    codes = await asyncio.gather(*(close_code(ws, IDLE + 10) for ws in sockets.values()))
    took = time.monotonic() - opened
    assert codes == [4000] * 500
    assert IDLE - 0.5 <= took <= IDLE + 3

    def closes() -> list[dict]:
        events = stream_events(get_client(), "telemetry.connection_closed")
        return [e["payload"] for _, e in events if e["payload"]["robot_id"] in tokens]

    assert wait_for(lambda: len(closes()) == 500, 5)
    assert {(close["reason"], close["close_code"]) for close in closes()} == {("idle_timeout", 4000)}
    assert rss_mb(daphne.process.pid) - rss_before < 50


async def test_a_robot_flooding_1000_frames_a_second_is_rate_limited_and_others_keep_their_ack_latency(daphne):
    tokens = await database_sync_to_async(robots)(11, "flood")
    flooder_id = next(iter(tokens))
    flooder_token = tokens.pop(flooder_id)
    sockets = await open_many(daphne.ws_url, tokens)

    async def measure(seconds: float) -> list[float]:
        """Ack latency of the ten well-behaved robots, each sending 10 frames a second."""
        latencies: list[float] = []

        async def robot(ws) -> None:
            deadline = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < deadline:
                seq += 1
                started = time.perf_counter()
                await ws.send(telemetry(seq))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply == {"type": "ack", "seq": seq}
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)

        await asyncio.gather(*(robot(ws) for ws in sockets.values()))
        return latencies

    flooder = await open_robot(daphne.ws_url, flooder_id, flooder_token)

    replies = {"ack": 0, "rate_limited": 0, "pong": 0}

    async def flood(seconds: float) -> int:
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(10):
                sent += 1
                await flooder.send(telemetry(sent))
            await asyncio.sleep(0.01)
        return sent

    async def read_flood() -> None:
        async for raw in flooder:
            reply = json.loads(raw)
            replies[reply["type"] if reply["type"] != "error" else reply["code"]] += 1

    reader = asyncio.ensure_future(read_flood())
    sent, loaded = await asyncio.gather(flood(3.0), measure(3.0))
    loaded = median(loaded)
    assert sent >= 2000, "the flood did not reach its rate"
    await asyncio.sleep(1.1)
    # At most 20 frames a second are accepted; the rest are dropped undecoded with one rate_limited reply
    # per second, not one each; 3 s of flood is not yet the sustained flood that closes a socket (1008).
    assert 0 < replies["ack"] <= 20 * 5
    assert 1 <= replies["rate_limited"] <= 5
    await flooder.send('{"type": "ping"}')
    await asyncio.to_thread(wait_for, lambda: replies["pong"] == 1, 5)
    reader.cancel()
    # Every ack of the others came (each within 5 s, above); how fast, compared with no flood, is bench/'s
    # to measure. A flood that held up the event loop would show here as seconds, not milliseconds.
    assert loaded < 0.5, f"median ack {loaded * 1000:.1f} ms under flood"
    for ws in (flooder, *sockets.values()):
        await ws.close()


STALLED_DASHBOARD = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url, origin):
    async with connect(url, additional_headers={"Origin": origin}, max_size=None) as ws:
        print("connected", flush=True)
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "sync":
                    await ws.send(json.dumps({"type": "ack", "sync": message["sync"]}))
        except Exception:
            pass
        print("closed", ws.close_code, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_stalled_dashboard_neither_grows_daphne_nor_slows_robots(daphne, operator):
    tokens = await database_sync_to_async(robots)(100, "busy")
    api_token = (await database_sync_to_async(Token.objects.create)(user=operator)).key
    SECRETS.append(api_token)
    url = f"{daphne.ws_url}/api/telemetry/fleet/ws?token={api_token}"
    viewer = subprocess.Popen(  # noqa: ASYNC220 - started once, read with a timeout below
        [sys.executable, "-c", STALLED_DASHBOARD, url, daphne.base_url], cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    try:
        assert viewer.stdout.readline().strip() == "connected"
        sockets = await open_many(daphne.ws_url, tokens)
        latencies: list[float] = []

        async def stream(ws, seconds: float) -> None:
            deadline = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < deadline:
                seq += 1
                started = time.perf_counter()
                # Large frames with every metric changing: the most a dashboard could be sent.
                await ws.send(telemetry(seq, cpu_usage=seq % 100, padding="p" * 2000))
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ack", "seq": seq}
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)

        await asyncio.gather(*(stream(ws, 1.0) for ws in sockets.values()))
        rss_before = rss_mb(daphne.process.pid)
        viewer.send_signal(signal.SIGSTOP)
        latencies.clear()
        await asyncio.gather(*(stream(ws, 15.0) for ws in sockets.values()))
        grown = rss_mb(daphne.process.pid) - rss_before
        viewer.send_signal(signal.SIGCONT)
        # It was closed for stalling; after waking it reads what the kernel had buffered, then the close.
        assert viewer.communicate(timeout=20)[0].strip().splitlines()[-1] == "closed 4008"
        assert grown < 50, f"daphne grew by {grown:.1f} MiB"
        # Every robot frame was acked throughout, and promptly.
        assert len(latencies) >= 100 * 100
        assert sorted(latencies)[int(len(latencies) * 0.99)] < 0.5
        for ws in sockets.values():
            await ws.close()
    finally:
        if viewer.poll() is None:
            viewer.send_signal(signal.SIGCONT)
            viewer.kill()
            viewer.wait()
    assert await database_sync_to_async(Robot.objects.filter(robot_id__startswith="busy").count)() == 100
