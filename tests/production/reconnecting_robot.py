"""A robot that keeps streaming through server restarts: what a real robot's client does, in miniature.

It sends frames in order, one outstanding at a time; when the socket closes (1001 from a stopping
daphne, a refused handshake, a dropped connection) it waits with exponential backoff and jitter,
reconnects through the same URL (nginx picks a live daphne) and resends the frame that was not
acknowledged. Kept on its own so the production tests can switch to the fleet_client library
without touching the tests.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

FRAME = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}
MAX_BACKOFF = 2.0


class ReconnectingRobot:
    def __init__(self, url: str, robot_id: str, token: str, tls: ssl.SSLContext | None, rate: float) -> None:
        self.url = f"{url}/api/telemetry/ws/{robot_id}"
        self.robot_id = robot_id
        self.token = token
        self.tls = tls
        self.interval = 1.0 / rate
        self.acked: list[int] = []
        self.connects = 0
        self.close_codes: list[int | None] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until `stop` is set, and then until the last frame sent is acknowledged."""
        seq = 1
        backoff = 0.1
        while True:
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    ssl=self.tls,
                    open_timeout=5,
                    compression=None,
                ) as ws:
                    self.connects += 1
                    backoff = 0.1
                    while True:
                        if stop.is_set() and (not self.acked or self.acked[-1] == seq - 1):
                            return
                        await ws.send(json.dumps({"type": "telemetry", "seq": seq, **FRAME}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        if reply.get("type") != "ack" or reply.get("seq") != seq:
                            # An error (e.g. reconnecting_too_fast) precedes a close: go round again.
                            raise ConnectionError(f"{self.robot_id}: {reply}")
                        self.acked.append(seq)
                        seq += 1
                        await asyncio.sleep(self.interval)
            except ConnectionClosed as closed:
                self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, InvalidHandshake, ConnectionError, TimeoutError):
                self.close_codes.append(None)
            # Spread the reconnections of a fleet that one restart cut off at once.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, MAX_BACKOFF)
