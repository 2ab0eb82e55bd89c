"""The robot WebSocket, /api/telemetry/ws/<robot_id>: authenticate, validate, ack, hand over to ingest.

The consumer runs its own receive loop instead of channels' generic dispatch: per message it awaits
the client's next message and handles it inline, with no task per message and no database-connection
housekeeping (PERF_NOTES: the generic machinery costs more than the work). Channel-layer messages for
this socket (robot.replace, robot.revoke) arrive on one long-lived listener task.

Close paths, each reported once with connection_closed (duration_seconds, close_code, reason):
client_disconnect (the client's code), idle_timeout 4000, protocol_error 1008, too_large 1009,
rate_limited 4429, replaced 4409, revoked 4403, server_shutdown 1001.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from urllib.parse import parse_qs

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from fleet.logs import bind_connection
from telemetry import frames, latency, presence
from telemetry.connections import get_registry
from telemetry.frames import PING, Batch, FrameError, Telemetry
from telemetry.ingest import accept_batch, accept_frame
from telemetry.protocol import UnsupportedProtocol, choose_subprotocol
from telemetry.robots import authenticate, is_valid_robot_id, robot_group
from telemetry.signals import connection_closed, connection_established

logger = logging.getLogger(__name__)
_warned_at = float("-inf")


def _warn_sometimes(message: str, *args) -> None:
    """Log a process-wide problem at most once a minute, not once per socket."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 60:
        _warned_at = now
        logger.warning(message, *args)


def new_connection_id(robot_id: str, now: float) -> str:
    return f"ws_{robot_id}_{int(now * 1000)}_{secrets.token_hex(2)}"


def handshake_token(scope: dict) -> str | None:
    """The robot's token from `Authorization: Bearer`, else from `?token=`. Never log it."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return tokens[0] if tokens else None


class RobotConsumer(AsyncConsumer):
    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        self.base_send = send
        self.finished = False
        self.listener: asyncio.Task | None = None
        self.done = asyncio.Event()
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        started = time.perf_counter()
        if not await self._handshake():
            return
        latency.HANDSHAKE.observe(time.perf_counter() - started)
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
                    # daphne itself closes messages over --websocket-max-message-size with 1009.
                    self._finish(code, "too_large" if code == 1009 else "client_disconnect")
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
        robot_id = self.scope["url_route"]["kwargs"]["robot_id"]
        try:
            subprotocol = choose_subprotocol(self.scope.get("subprotocols") or [])
        except UnsupportedProtocol as exc:
            logger.warning("robot %r refused: %s", robot_id[:64], exc)
            await self.base_send({"type": "websocket.close"})  # before accept: HTTP 403
            return False
        robot = None
        if is_valid_robot_id(robot_id):
            robot = await database_sync_to_async(authenticate)(robot_id, handshake_token(self.scope))
        if robot is None:
            # Before accept, a close is an HTTP 403: nothing stored, no event.
            await self.base_send({"type": "websocket.close"})
            return False

        self.robot_id = robot_id
        self.robot_pk = robot.pk
        self.connected_at = time.time()
        self.connection_id = new_connection_id(robot_id, self.connected_at)
        bind_connection(robot_id, self.connection_id)
        self.registry = get_registry()
        self.flusher = self.registry.flusher
        loop_now = asyncio.get_running_loop().time()
        self.last_message_at = loop_now
        self.lease_refreshed_at = loop_now
        self.group_joined_at = loop_now
        self.window_start = loop_now
        self.window_count = 0
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
            retry_after = await presence.admit_connection(robot_id, self.connection_id)
        except Exception as exc:
            # Redis down or hung: let the robot in; the next lease refresh writes its lease.
            _warn_sometimes("connect check failed (%s); admitting robots without it", exc)
            retry_after = 0.0
            self.lease_refreshed_at = float("-inf")

        await self.base_send({"type": "websocket.accept", "subprotocol": subprotocol})
        logger.info("robot %s connected", robot_id)
        self.flusher.open_session(self.connection_id, self.robot_pk, self.connected_at)
        connection_established.send(
            sender=RobotConsumer,
            robot_id=robot_id,
            connection_id=self.connection_id,
            timestamp=self.connected_at,
        )
        if retry_after > 0:
            self.leased = False
            await self._send({"type": "error", "code": "reconnecting_too_fast", "retry_after": math.ceil(retry_after)})
            self.channel_layer = None
            await self.close_with(4429, "rate_limited")
            return True

        self.registry.add(self)
        self.flusher.presence_changed.add(robot_id)
        if self.registry.closing:
            # The server is stopping: send the robot elsewhere rather than let daphne cut it off.
            self.channel_layer = None
            await self.close_with(1001, "server_shutdown")
            return True
        self.channel_layer = get_channel_layer()
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()  # a local name, no I/O
        return True

    async def _join_group(self) -> None:
        """Join the robot's group and tell older sockets of this robot, in any process, to close (4409)."""
        try:
            await self.channel_layer.group_add(robot_group(self.robot_id), self.channel_name)
            await self._announce()
        except Exception as exc:
            _warn_sometimes("channel layer unavailable (%s); robots are not replaced across processes", exc)
            self.group_joined_at = float("-inf")  # the process loop retries the membership

    async def _announce(self) -> None:
        await self.channel_layer.group_send(
            robot_group(self.robot_id),
            {"type": "robot.replace", "connection_id": self.connection_id, "connected_at": self.connected_at},
        )

    async def renew_group(self) -> None:
        try:
            await self.channel_layer.group_add(robot_group(self.robot_id), self.channel_name)
        except Exception as exc:
            _warn_sometimes("group renewal failed (%s); retrying", exc)
            self.group_joined_at = float("-inf")

    async def _leave_group(self) -> None:
        try:
            await self.channel_layer.group_discard(robot_group(self.robot_id), self.channel_name)
        except Exception:
            pass  # The membership expires by itself (group_expiry).

    async def _listen(self) -> None:
        # Off the handshake path: a slow or hung channel layer must not delay the first acks.
        await self._join_group()
        handlers = {"robot.replace": self.robot_replace, "robot.revoke": self.robot_revoke}
        while True:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _warn_sometimes("channel layer receive failed (%s); retrying every second", exc)
                await asyncio.sleep(1.0)
                continue
            handler = handlers.get(message.get("type"))
            if handler is not None:
                await handler(message)
            if self.finished:
                return

    # --- channel-layer handlers -------------------------------------------------------------------

    async def robot_replace(self, event: dict) -> None:
        """A newer authenticated socket of this robot exists (here or in another process)."""
        if event["connection_id"] == self.connection_id:
            return
        if (event["connected_at"], event["connection_id"]) > (self.connected_at, self.connection_id):
            await self.close_with(4409, "replaced")
            return
        # An older socket joined the group after our announcement missed it: announce again.
        try:
            await self._announce()
        except Exception as exc:
            _warn_sometimes("channel layer unavailable (%s); robots are not replaced across processes", exc)

    async def robot_revoke(self, event: dict) -> None:
        """The robot was revoked (admin/API): close with 4403."""
        await self.close_with(4403, "revoked")

    # --- frames -----------------------------------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        received = time.perf_counter()
        now_loop = asyncio.get_running_loop().time()
        self.last_message_at = now_loop
        if len(text) > self.safe_chars and len(text.encode()) > self.max_bytes:
            await self.close_with(1009, "too_large")
            return
        if now_loop - self.window_start >= 1.0:
            self.window_start = now_loop
            self.window_count = 0
        self.window_count += 1
        obj = frames.decode(text)
        if self.window_count > self.max_per_second:
            detail = f"more than {self.max_per_second} frames per second"
            await self._reject(FrameError(frames.RATE_LIMITED, detail, frames.peek_seq(obj)), in_a_row=False)
            return
        if type(obj) is FrameError:
            await self._reject(obj)
            return
        now = time.time()
        frame = frames.parse_frame(obj, now)
        kind = type(frame)
        if kind is Telemetry:
            accept_frame(self.flusher, self, frame, now)
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
        for error in batch.errors:
            self.frames_rejected += 1
            self.flusher.rejected += 1
            await self._send(error.message())
        if not batch.frames:
            await self._count_invalid()
            if self.finished:
                return
        else:
            self.invalid_streak = 0
        committed = accept_batch(self.flusher, self, batch, now)
        self.frames_accepted += len(batch.frames)
        if committed is not None:
            self.registry.ensure_running()
            try:
                # The robot drops its backfill buffer on this ack: reply once it is committed.
                await committed
            except Exception:
                logger.warning("robot %s: backfill batch not stored; not acknowledged", self.robot_id)
                return
        if not self.finished:
            await self._send({"type": "ack", "seq": batch.last_seq, "accepted": len(batch.frames)})

    async def _on_bytes(self, data: bytes) -> None:
        self.last_message_at = asyncio.get_running_loop().time()
        if len(data) > self.max_bytes:
            await self.close_with(1009, "too_large")
            return
        await self._reject(FrameError(frames.INVALID_FRAME, "binary frames are not supported; send JSON text"))

    async def _reject(self, error: FrameError, in_a_row: bool = True) -> None:
        self.frames_rejected += 1
        self.flusher.rejected += 1
        await self._send(error.message())
        if in_a_row:
            await self._count_invalid()

    async def _count_invalid(self) -> None:
        self.invalid_streak += 1
        if self.invalid_streak >= self.max_invalid:
            await self.close_with(1008, "protocol_error")

    async def _send(self, payload: dict) -> None:
        await self.base_send({"type": "websocket.send", "text": json.dumps(payload, separators=(",", ":"))})

    # --- closing ----------------------------------------------------------------------------------

    async def close_with(self, code: int, reason: str) -> None:
        """Close from the server side; the close is recorded at once, whatever the client does next."""
        if self.finished:
            return
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
        registry = self.registry
        registry.discard(self)
        self.flusher.close_session(
            self.connection_id,
            {
                "disconnected_at": now,
                "reason": reason,
                "close_code": code,
                "frames_accepted": self.frames_accepted,
                "frames_rejected": self.frames_rejected,
            },
        )
        if self.leased:
            self.flusher.release.append((self.connection_id, self.robot_id))
            if reason != "replaced":
                # A replaced robot is still connected, through its newer socket.
                self.flusher.presence_changed.add(self.robot_id)
        registry.ensure_running()
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
