"""The robot WebSocket, /api/telemetry/ws/<robot_id>: validate, ack, and hand each frame to the ingest buffer.

Its own receive loop replaces channels' generic dispatch, which costs more than the work per frame
(docs/architecture.md). Refused handshakes (4429, 1001) store and announce nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time

from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from fleet.logs import bind_connection
from telemetry import frame_rate, frames, latency, presence, refusals
from telemetry.closes import CLOSE_CODES
from telemetry.connections import get_registry
from telemetry.frame_rate import FrameRate
from telemetry.frames import PING, Batch, FrameError, Telemetry
from telemetry.revalidation import get_revalidation
from telemetry.robot_group import RobotGroupMember, warn_sometimes
from telemetry.signals import connection_closed, connection_established

logger = logging.getLogger(__name__)
# Closes made below the app (daphne: 1009; fleet.socket_bounds: 1013), which it hears as a disconnect.
DISCONNECT_REASONS = {1009: "too_large", 1013: "overloaded"}


def new_connection_id(robot_id: str, now: float) -> str:
    # 64 random bits: ids never collide, whatever the number of robots and reconnects.
    return f"ws_{robot_id}_{int(now * 1000)}_{secrets.token_hex(8)}"


class RobotConsumer(RobotGroupMember, AsyncConsumer):
    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        self.finished = False
        self.listener: asyncio.Task | None = None
        self.done = asyncio.Event()
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if not await self._handshake():
            return
        self.listener = listener = asyncio.ensure_future(self._listen()) if self.channel_layer is not None else None
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if self.finished:
                        continue
                    text = message.get("text")
                    if text is not None:
                        await self._on_text(text)
                    else:
                        await self._on_bytes(message.get("bytes") or b"")
                elif kind == "websocket.disconnect":
                    code = message.get("code")
                    self._finish(code, DISCONNECT_REASONS.get(code, "client_disconnect"))
                    return
        finally:
            # Also reached when daphne cancels us: the close is still recorded (synchronously).
            self._finish(None, "client_disconnect")
            self.done.set()
            if listener is not None:
                listener.cancel()
                self.registry.spawn(self._leave_group())

    # --- handshake ------------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """Admit the robot (True), or turn it away storing and announcing nothing (False)."""
        credential = self.scope["robot"]  # telemetry.handshake.RobotTokenMiddleware authenticated it
        self.robot_id = robot_id = self.scope["url_route"]["kwargs"]["robot_id"]
        self.subprotocol = self.scope["robot_subprotocol"]
        self.registry = get_registry()
        self.channel_layer = None
        if self.registry.closing:
            # The server is stopping: send the robot elsewhere rather than let daphne cut it off.
            await self._refuse(refusals.SERVER_SHUTDOWN, "server_shutdown")
            return False
        self.robot_pk = credential.pk
        self.token_hash = credential.token_hash
        self.connected_at = time.time()
        self.connection_id = new_connection_id(robot_id, self.connected_at)
        bind_connection(robot_id, self.connection_id)
        self.buffer = self.registry.buffer
        loop_now = asyncio.get_running_loop().time()
        self.last_message_at = loop_now
        self.lease_refreshed_at = loop_now
        self.group_joined_at = loop_now
        self.credentials_checked_at = loop_now
        self.rate = FrameRate(loop_now)
        self.invalid_streak = 0
        self.frames_accepted = 0
        self.frames_rejected = 0
        self.max_bytes = settings.TELEMETRY_MAX_MESSAGE_BYTES
        # A str of at most max_bytes/4 characters cannot exceed max_bytes in UTF-8: skip encoding it.
        self.safe_chars = self.max_bytes // 4
        self.max_per_second = settings.TELEMETRY_MAX_FRAMES_PER_SECOND
        self.max_invalid = settings.TELEMETRY_MAX_INVALID_FRAMES
        self.leased = True
        try:
            retry_after, self.alone = await presence.admit(robot_id, self.connection_id)
        except Exception as exc:
            # Redis down or hung: let the robot in; the next lease refresh writes its lease.
            warn_sometimes("connect check failed (%s); admitting robots without it", exc)
            retry_after, self.alone = 0.0, False
            self.lease_refreshed_at = float("-inf")
        if retry_after > 0:
            # No lease was taken: refused before anything is stored or announced.
            error = {"type": "error", "code": "reconnecting_too_fast", "retry_after": math.ceil(retry_after)}
            await self._refuse(refusals.RECONNECTING_TOO_FAST, "rate_limited", error)
            return False

        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        latency.HANDSHAKE.observe(time.perf_counter() - self.scope.get("handshake_started", time.perf_counter()))
        logger.info("robot %s connected", robot_id)
        self.buffer.open(robot_id, self.robot_pk, self.connection_id, self.connected_at, leased=True)
        connection_established.send(
            sender=RobotConsumer,
            robot_id=robot_id,
            connection_id=self.connection_id,
            timestamp=self.connected_at,
        )
        self.registry.add(self)
        get_revalidation().watch(self.registry.connections.values)
        self.channel_layer = get_channel_layer()
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()  # a local name, no I/O
        return True

    async def _refuse(self, counted_as: str, reason: str, error: dict | None = None) -> None:
        """Turn a robot away with a close code (which needs an accepted socket), storing and announcing nothing."""
        refusals.count(counted_as)
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        if error is not None:
            await self._send(error)
        await self.base_send({"type": "websocket.close", "code": CLOSE_CODES[reason], "reason": reason})

    # --- frames -----------------------------------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        received = time.perf_counter()
        if not await self._admitted(len(text) > self.safe_chars and len(text.encode()) > self.max_bytes):
            return
        obj = frames.decode(text)
        if type(obj) is FrameError:
            await self._reject(obj)
            return
        now = time.time()
        frame = frames.parse_frame(obj, now)
        kind = type(frame)
        if kind is Telemetry:
            self.buffer.accept(self.robot_id, self.robot_pk, self.connection_id, frame, now)
            self.frames_accepted += 1
            self.invalid_streak = 0
            seq = frame.seq
            await self.base_send(
                {"type": "websocket.send", "text": f'{{"type":"ack","seq":{"null" if seq is None else seq}}}'}
            )
            if self.frames_accepted % latency.ACK_SAMPLE == 0:
                latency.ACK_LATENCY.observe(time.perf_counter() - received)
        elif frame is PING:
            self.invalid_streak = 0
            await self._send({"type": "pong", "ts": now})
        elif kind is Batch:
            await self._on_batch(frame, now)
        else:
            await self._reject(frame)

    async def _on_batch(self, batch: Batch, now: float) -> None:
        self.frames_rejected += len(batch.errors)
        self.buffer.reject(len(batch.errors))
        for error in batch.errors:
            await self._send(error.message())
        if not batch.frames:
            await self._count_invalid()
            if self.finished:
                return
        else:
            self.invalid_streak = 0
        committed = self.buffer.accept_batch(self.robot_id, self.robot_pk, self.connection_id, batch, now)
        self.frames_accepted += len(batch.frames)
        if committed is not None:
            self.registry.ensure_running()
            try:
                # The robot drops its backfill buffer on this ack: reply once it is committed. Without an ack
                # in time the robot resends the batch (stored once: samples are unique per robot and instant).
                await asyncio.wait_for(committed, settings.TELEMETRY_BACKFILL_COMMIT_TIMEOUT)
            except TimeoutError:
                logger.warning("robot %s: backfill batch not committed in time; not acknowledged", self.robot_id)
                return
            except Exception:
                logger.warning("robot %s: backfill batch not stored; not acknowledged", self.robot_id)
                return
        if not self.finished:
            await self._send({"type": "ack", "seq": batch.last_seq, "accepted": len(batch.frames)})

    async def _on_bytes(self, data: bytes) -> None:
        if not await self._admitted(len(data) > self.max_bytes):
            return
        await self._reject(FrameError(frames.INVALID_FRAME, "binary frames are not supported; send JSON text"))

    async def _admitted(self, too_large: bool) -> bool:
        """The bounds checked before any decoding: the size, then the frame budget."""
        now_loop = self.last_message_at = asyncio.get_running_loop().time()
        if too_large:
            await self.close_with("too_large")
            return False
        verdict = self.rate.check(now_loop)
        if verdict:
            await self._over_budget(verdict)
            return False
        return True

    async def _over_budget(self, verdict: int) -> None:
        """A message over the frame budget: dropped undecoded, at most one error a second, 1008 when it floods."""
        self.frames_rejected += 1
        self.buffer.reject()
        if verdict == frame_rate.RATE_LIMITED:
            detail = f"more than {self.max_per_second} frames per second"
            await self._send(FrameError(frames.RATE_LIMITED, detail).message())
        elif verdict == frame_rate.FLOOD:
            await self.close_with("flooding")

    async def _reject(self, error: FrameError, in_a_row: bool = True) -> None:
        self.frames_rejected += 1
        self.buffer.reject()
        await self._send(error.message())
        if in_a_row:
            await self._count_invalid()

    async def _count_invalid(self) -> None:
        self.invalid_streak += 1
        if self.invalid_streak >= self.max_invalid:
            await self.close_with("protocol_error")

    async def _send(self, payload: dict) -> None:
        await self.base_send({"type": "websocket.send", "text": json.dumps(payload, separators=(",", ":"))})

    # --- closing ----------------------------------------------------------------------------------

    async def close_with(self, reason: str) -> None:
        """Close from the server side; the close is recorded at once, whatever the client does next."""
        if self.finished:
            return
        code = CLOSE_CODES[reason]
        self._finish(code, reason)
        try:
            await self.base_send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            pass  # The socket is already gone; the close is recorded all the same.
        listener = getattr(self, "listener", None)
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()  # (from within the listener, it returns by itself)

    def _finish(self, code: int | None, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        now = time.time()
        self.registry.discard(self)
        counts = {"frames_accepted": self.frames_accepted, "frames_rejected": self.frames_rejected}
        session = {"disconnected_at": now, "reason": reason, "close_code": code, **counts}
        # A replaced robot is still connected, through its newer socket: the buffer knows.
        self.buffer.close(self.robot_id, self.connection_id, session, self.leased)
        self.registry.ensure_running()
        # With `extra`: a close decided by the process loop runs outside this socket's task.
        logger.info(
            "robot %s closed: %s (code %s) after %.1f s; %d frames accepted, %d rejected",
            self.robot_id,
            reason,
            code,
            now - self.connected_at,
            self.frames_accepted,
            self.frames_rejected,
            extra={"robot_id": self.robot_id, "connection_id": self.connection_id},
        )
        connection_closed.send(
            sender=RobotConsumer,
            robot_id=self.robot_id,
            connection_id=self.connection_id,
            duration_seconds=now - self.connected_at,
            reason=reason,
            close_code=code,
            timestamp=now,
        )
