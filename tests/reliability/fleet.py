"""Shared tools of the reliability tests: robots in bulk, WebSocket clients, reading the streams, RSS."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import psutil
import redis
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from telemetry.robots import create_robots

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


def make_robots(count: int, prefix: str = "rel") -> dict[str, str]:
    """`count` robots with their tokens, provisioned in bulk as `create_robot` does.

    Through create_robots, so running servers' credential caches hear of them: a test that re-creates
    the ids of an earlier one (its tables emptied in between) must not meet the old tokens there.
    """
    created, _ = create_robots([f"{prefix}-{n:04d}" for n in range(count)])
    return dict(created)


def telemetry(seq: int, **fields) -> str:
    return json.dumps({"type": "telemetry", "seq": seq, **GOOD, **fields})


async def open_robot(ws_url: str, robot_id: str, token: str | None, **kwargs) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(
        f"{ws_url}/api/telemetry/ws/{robot_id}",
        additional_headers=headers,
        open_timeout=kwargs.pop("open_timeout", 10),
        compression=None,
        **kwargs,
    )


async def open_many(ws_url: str, tokens: dict[str, str], concurrency: int = 50) -> dict[str, ClientConnection]:
    gate = asyncio.Semaphore(concurrency)

    async def one(robot_id: str, token: str) -> tuple[str, ClientConnection]:
        async with gate:
            return robot_id, await open_robot(ws_url, robot_id, token)

    return dict(await asyncio.gather(*(one(robot_id, token) for robot_id, token in tokens.items())))


async def round_trip(ws: ClientConnection, seq: int, within: float = 5.0) -> tuple[dict, float]:
    """Send one frame; the reply and the seconds it took."""
    started = time.perf_counter()
    await ws.send(telemetry(seq))
    reply = json.loads(await asyncio.wait_for(ws.recv(), within))
    return reply, time.perf_counter() - started


async def close_code(ws: ClientConnection, within: float = 15.0) -> int | None:
    """Wait for the server to close the socket; the code it sent (None when the TCP connection just dropped)."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def stream_events(client: redis.Redis, event_type: str | None = None, after: str = "-") -> list[tuple[str, dict]]:
    """(stream id, envelope) of the event stream after `after`, optionally of one type."""
    start = after if after == "-" else f"({after}"
    found = []
    for entry_id, fields in client.xrange(settings.FLEET_EVENT_STREAM, start, "+"):
        if event_type is None or fields[b"type"].decode() == event_type:
            found.append((entry_id.decode(), json.loads(fields[b"data"])))
    return found


def last_event_id(client: redis.Redis) -> str:
    entries = client.xrevrange(settings.FLEET_EVENT_STREAM, count=1)
    return entries[0][0].decode() if entries else "0-0"


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, dict | str, float]:
    """(status, JSON body or text, seconds) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    elapsed = time.perf_counter() - started
    try:
        return status, json.loads(raw), elapsed
    except ValueError:
        return status, raw.decode(errors="replace"), elapsed


def rss_mb(pid: int, children: bool = False) -> float:
    """Resident memory of a process (and its descendants) in MiB."""
    process = psutil.Process(pid)
    processes = [process, *(process.children(recursive=True) if children else [])]
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def assert_no_secret_in_logs(logs: Iterable[Path], secrets: Iterable[str]) -> None:
    """No token (robot or DRF, whole or as a ?token= query) appears in any of the processes' logs."""
    secrets = [secret for secret in secrets if secret]
    assert secrets, "nothing to look for"
    for log in logs:
        text = log.read_text(errors="replace")
        leaked = [secret[:6] + "…" for secret in secrets if secret in text]
        assert not leaked, f"{log.name} contains tokens {leaked}"
        assert "token=" not in text, f"{log.name} logs a ?token= query string"
