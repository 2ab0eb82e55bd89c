"""One open connection: send what is buffered within the rate limit, and match the server's replies.

The server answers a connection's messages in the order it received them (a batch's ack waits for
its commit, and what follows waits behind it). So an ack for a message also says that every earlier
message still waiting got no ack (refused with rate_limited, or its database write failed): those
frames are sent again at once. An ack that never comes is covered by `ack_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from fleet_client.frames import MAX_AGE, MAX_BATCH, MAX_MESSAGE_BYTES, batch_message

if TYPE_CHECKING:
    from fleet_client.client import RobotClient

logger = logging.getLogger("fleet_client")
PING = '{"type":"ping"}'


class Session:
    def __init__(self, client: RobotClient, ws: ClientConnection) -> None:
        self.client = client
        self.buffer = client._buffer
        self.ws = ws
        # Message key (its last seq) -> (its seqs, when it was sent), oldest first.
        self.in_flight: dict[int, tuple[list[int], float]] = {}
        self.key_of: dict[int, int] = {}
        # Frames up to this seq were buffered before this connection or sent once already: batch them.
        self.batch_until = max(self.buffer.frames, default=-1)
        self.sent_at: deque[float] = deque()
        self.last_sent = time.monotonic()
        self.retry_after: float | None = None
        self.healthy = False
        self.close_code: int | None = None

    async def run(self) -> None:
        """Until the connection closes; `close_code` and `retry_after` say how it ended."""
        sender = asyncio.create_task(self._send_loop())
        try:
            while True:
                self._on_message(await self.ws.recv())
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
        finally:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, ConnectionClosed):
                pass

    # --- sending ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                self.client._wake.clear()
                wait = await self._send_some()
                try:
                    await asyncio.wait_for(self.client._wake.wait(), wait)
                except TimeoutError:
                    pass
        except ConnectionClosed:
            return
        except Exception:
            logger.exception("robot %s: sending failed; reconnecting", self.client.robot_id)
            await self.ws.close(1011)

    async def _send_some(self) -> float:
        """Send what the rate limit and the in-flight window allow; seconds until worth looking again."""
        client = self.client
        now = time.monotonic()
        self._expire(now)
        while len(self.in_flight) < client.max_in_flight:
            while self.sent_at and now - self.sent_at[0] >= 1.0:
                self.sent_at.popleft()
            if len(self.sent_at) >= client.max_messages_per_second:
                return 1.0 - (now - self.sent_at[0]) + 0.001
            picked, texts = self._pick()
            if not picked:
                break
            live = len(picked) == 1 and picked[0] > self.batch_until
            await self._send(texts[0] if live else batch_message(texts), picked, now)
            now = time.monotonic()
        if now - self.last_sent >= client.ping_after:
            await self._send(PING, [], now)
        return 0.25

    def _pick(self) -> tuple[list[int], list[str]]:
        """The oldest frames not in flight, up to a batch; frames too old for the server are given up."""
        picked: list[int] = []
        texts: list[str] = []
        size = 64
        too_old: list[int] = []
        oldest_ts = time.time() - MAX_AGE
        for seq, ts, text in self.buffer.oldest():
            if seq in self.key_of:
                continue
            if ts < oldest_ts:
                too_old.append(seq)
                continue
            if len(picked) == MAX_BATCH or size + len(text) + 1 > MAX_MESSAGE_BYTES:
                break
            picked.append(seq)
            texts.append(text)
            size += len(text) + 1
        if too_old:
            logger.warning(
                "robot %s: %d frames are older than the server keeps; dropped", self.client.robot_id, len(too_old)
            )
            self.client._settle(too_old, "rejected", reason="too_old")
        return picked, texts

    async def _send(self, text: str, seqs: list[int], now: float) -> None:
        await self.ws.send(text)
        self.sent_at.append(now)
        self.last_sent = now
        if seqs:
            key = seqs[-1]
            self.in_flight[key] = (seqs, now)
            for seq in seqs:
                self.key_of[seq] = key

    def _expire(self, now: float) -> None:
        if self.in_flight:
            _, (_, sent) = next(iter(self.in_flight.items()))
            if now - sent >= self.client.ack_timeout:
                logger.warning(
                    "robot %s: no ack within %g s; sending again", self.client.robot_id, self.client.ack_timeout
                )
                self._resend(list(self.in_flight))

    def _resend(self, keys: list[int]) -> None:
        """Take messages out of flight; their frames are still buffered, so they go out again (batched)."""
        for key in keys:
            seqs, _ = self.in_flight.pop(key)
            for seq in seqs:
                self.key_of.pop(seq, None)
            self.batch_until = max(self.batch_until, key)
        self.client._wake.set()

    # --- receiving ----------------------------------------------------------------------------

    def _on_message(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ack":
            self._on_ack(message.get("seq"))
        elif kind == "error":
            self._on_error(message)
        elif kind == "pong":
            self.healthy = True

    def _on_ack(self, key: object) -> None:
        if type(key) is not int or key not in self.in_flight:
            return  # an ack for a message already given up on and sent again
        self.healthy = True
        keys = list(self.in_flight)
        self._resend(keys[: keys.index(key)])
        seqs, sent_at = self.in_flight.pop(key)
        for seq in seqs:
            self.key_of.pop(seq, None)
        self.client._settle(seqs, "acked", sent_at=sent_at)

    def _on_error(self, message: dict) -> None:
        code = message.get("code")
        if code == "reconnecting_too_fast":
            self.retry_after = float(message.get("retry_after") or 1)
            return
        seq = message.get("seq")
        key = self.key_of.get(seq) if type(seq) is int else None
        if key is None:
            return
        if code == "rate_limited":
            self._resend([key])  # a live frame: nothing of it was taken
            return
        # The server will never take this frame: keeping it would only block the buffer.
        logger.warning("robot %s: frame %d refused (%s: %s)", self.client.robot_id, seq, code, message.get("detail"))
        self.client._settle([seq], "rejected", reason=str(code))
        if key == seq and len(self.in_flight[key][0]) == 1:
            self.in_flight.pop(key)
            self.key_of.pop(seq, None)
