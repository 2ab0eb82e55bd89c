"""RobotClient: submit frames at any time; they are kept until the server acks them, across reconnects."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import Literal
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from fleet_client import frames
from fleet_client.buffer import Buffer
from fleet_client.events import ClientEvent, EventCallback
from fleet_client.reconnect import SUBPROTOCOL, Backoff, Next, after_close
from fleet_client.session import Session

logger = logging.getLogger("fleet_client")
ROUTE = "/api/telemetry/ws/"


def endpoint(url: str, robot_id: str) -> str:
    """The robot's WebSocket URL from the server's base URL (ws://host:8000) or the full route."""
    if ROUTE in url:
        return url
    return f"{url.rstrip('/')}{ROUTE}{quote(robot_id, safe='')}"


class RobotClient:
    # The server refuses more than 20 messages a second per connection (TELEMETRY_MAX_FRAMES_PER_SECOND);
    # half of it leaves room for network jitter bunching messages into one of its one-second windows.
    max_messages_per_second = 10
    # Messages sent and not yet answered; a batch's ack waits for a database commit.
    max_in_flight = 10
    # Without an ack by then, the frames are sent again (a stored frame is never stored twice).
    ack_timeout = 30.0
    # The server closes a silent connection after 120 s (4000).
    ping_after = 30.0
    open_timeout = 10.0
    # A close handshake with a server that stopped answering gives up after this (websockets waits 10 s).
    close_timeout = 2.0
    # Full-jitter backoff between failed attempts: the n-th wait is uniform in [0, min(cap, base * 2**n)].
    backoff_base = 0.5
    backoff_cap = 60.0
    # After a 1001 the server is restarting (a deploy), not overloaded: until a connection is healthy
    # again, for at most restart_window seconds, the waits are capped at restart_backoff_cap. A proxy
    # answers 502/503 meanwhile; at the full cap a robot would sleep up to a minute past the restart.
    restart_backoff_cap = 2.0
    restart_window = 60.0

    def __init__(
        self,
        url: str,
        robot_id: str,
        token: str,
        buffer_path: str | None = None,
        max_buffered: int = 100_000,
        on_event: EventCallback | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.url = endpoint(url, robot_id)
        self.robot_id = robot_id
        self._token = token
        self._on_event = on_event
        # For wss:// with a private CA (or a self-signed certificate); None trusts the system's CAs.
        self._ssl = ssl
        self._buffer = Buffer(buffer_path, max_buffered)
        self._counts = {"submitted": 0, "acked": 0, "dropped": 0, "rejected": 0, "reconnects": 0}
        self._stopped: str | None = None
        self._lost_unreported = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._backoff = Backoff()
        self._ws: ClientConnection | None = None
        self._offline_for: float | None = None
        self._restart_until = 0.0  # monotonic time; see restart_window

    @property
    def stats(self) -> dict[str, int | str | None]:
        """Counts since this process started; `buffered` is what still waits for an ack (also from before)."""
        return {**self._counts, "buffered": len(self._buffer), "stopped": self._stopped}

    async def start(self) -> None:
        """Connect in the background and keep connected; returns at once."""
        if self._task is None:
            self._backoff = Backoff(self.backoff_base, self.backoff_cap)
            self._task = asyncio.create_task(self._run(), name=f"fleet_client {self.robot_id}")

    def submit(self, frame: dict) -> int:
        """Buffer one frame (stamped with seq, and with ts unless it has one) for sending; its seq. Never blocks."""
        frames.check(frame)
        seq = self._buffer.next_seq
        ts = frame.get("ts")
        if ts is None:
            # Strictly increasing to the microsecond: the server keeps one sample per (robot, ts).
            ts = round(max(time.time(), self._buffer.last_ts + 1e-6), 6)
        text = frames.encode(frame, seq, ts)
        dropped = self._buffer.add(seq, ts, text)
        self._counts["submitted"] += 1
        if dropped:
            self._counts["dropped"] += dropped
            self._lost_unreported += dropped
        self._wake.set()
        return seq

    async def flush(self, timeout: float = 30) -> bool:  # noqa: ASYNC109 (the interface robots are written against)
        """True once every frame submitted so far is acked; False on timeout, or if any was dropped or refused."""
        last = self._buffer.next_seq - 1
        deadline = time.monotonic() + timeout
        while self._buffer.frames and next(iter(self._buffer.frames)) <= last:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopped is not None:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass
        lost, self._lost_unreported = self._lost_unreported, 0
        return lost == 0

    async def close(self) -> None:
        """Stop sending; what is not acked stays in the buffer file (when there is one) for the next start."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._buffer.close()

    def interrupt(self, offline: float = 0.0) -> None:
        """Break the connection as a lost network would (no close handshake) and stay offline `offline` seconds.

        For simulations and tests: what is submitted meanwhile is buffered and backfilled on reconnect.
        """
        self._offline_for = max(0.0, offline)
        if self._ws is not None:
            self._ws.transport.abort()

    # --- for the session ----------------------------------------------------------------------

    def _settle(
        self, seqs: list[int], outcome: Literal["acked", "rejected"], reason: str = "", sent_at: float | None = None
    ) -> None:
        """Frames the server acked, or will never take ("rejected"): out of the buffer."""
        removed = self._buffer.remove(seqs)
        self._counts[outcome] += removed
        if outcome != "acked":
            self._lost_unreported += removed
        self._progress.set()
        latency = time.monotonic() - sent_at if sent_at is not None else None
        self._emit(ClientEvent(outcome, reason=reason, seqs=tuple(seqs), latency=latency))

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            # The caller's bug must not cost the robot its connection or its frames.
            logger.exception("robot %s: on_event failed on %s", self.robot_id, event.kind)

    # --- connecting ---------------------------------------------------------------------------

    async def _run(self) -> None:
        connections = 0
        while True:
            if self._offline_for is not None:
                # Interrupted: offline for as long as asked, instead of the close code's policy.
                await self._wait(self._offline_for, "interrupted")
                self._offline_for = None
            try:
                ws = await connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    subprotocols=[SUBPROTOCOL],
                    open_timeout=self.open_timeout,
                    close_timeout=self.close_timeout,
                    compression=None,
                    **({"ssl": self._ssl} if self._ssl is not None else {}),
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                self._emit(ClientEvent("connect_failed", code=status, reason=f"HTTP {status}"))
                if status == 403:
                    self._stop("refused with HTTP 403: unknown or inactive robot, wrong token, or unsupported protocol")
                    return
                await self._wait(self._next_delay(), f"handshake answered HTTP {status}")
                continue
            except InvalidURI as exc:
                self._emit(ClientEvent("connect_failed", reason=type(exc).__name__))
                self._stop(f"invalid URL: {exc}")
                return
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._emit(ClientEvent("connect_failed", reason=type(exc).__name__))
                await self._wait(self._next_delay(), f"cannot connect ({exc or type(exc).__name__})")
                continue
            if self._offline_for is not None:  # interrupted while connecting
                ws.transport.abort()
                continue
            if connections:
                self._counts["reconnects"] += 1
            connections += 1
            logger.info("robot %s: connected (%d frames to send)", self.robot_id, len(self._buffer))
            self._ws = ws
            self._emit(ClientEvent("connected"))
            session = Session(self, ws)
            try:
                await session.run()
            except Exception:
                # A bug must not end the robot's connection for good: log it and connect again.
                logger.exception("robot %s: connection failed", self.robot_id)
            finally:
                self._ws = None
                await ws.close()
            if session.healthy:
                self._backoff.reset()
                self._restart_until = 0.0
            action, reason = after_close(session.close_code)
            if session.close_code == 1001:
                if not self._restart_until:
                    self._restart_until = time.monotonic() + self.restart_window
            elif session.close_code is not None:
                self._restart_until = 0.0  # the server is up and answering: its close code decides
            self._emit(ClientEvent("disconnected", code=session.close_code, reason=reason))
            if action is Next.STOP:
                self._stop(f"closed with {session.close_code} ({reason}); not reconnecting")
                return
            if self._offline_for is not None:
                continue
            if action is Next.RETRY_AFTER and session.retry_after is not None:
                # Spread the fleet's returns over a second rather than all at the same instant.
                delay = session.retry_after + random.uniform(0.0, 1.0)
            elif action is Next.AT_ONCE and self._backoff.failures == 0:
                # At once, but only once in a row: a server that is still stopping closes again at once.
                delay = 0.0
                self._backoff.failures = 1
            else:
                delay = self._next_delay()
            await self._wait(delay, f"closed with {session.close_code} ({reason})")

    def _next_delay(self) -> float:
        restarting = time.monotonic() < self._restart_until
        return self._backoff.next_delay(self.restart_backoff_cap if restarting else None)

    async def _wait(self, delay: float, why: str) -> None:
        logger.info("robot %s: %s; reconnecting in %.2f s", self.robot_id, why, delay)
        await asyncio.sleep(delay)

    def _stop(self, why: str) -> None:
        self._stopped = why
        logger.error("robot %s: stopped for good: %s", self.robot_id, why)
        self._progress.set()
        self._emit(ClientEvent("stopped", reason=why))
