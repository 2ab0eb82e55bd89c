"""The event stream: a bounded per-process buffer drained into Redis by one background thread.

Callers never wait for Redis; buffering, drops and the one duplicate case: docs/events.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque

import redis
from django.conf import settings

from fleet.events.envelope import stream_fields
from fleet.redis import STREAMS, new_client

logger = logging.getLogger(__name__)

DROPPED_KEY = "fleet:events:dropped_total"
BATCH_SIZE = 500
# The publisher's own socket timeout is long on purpose: a hang (CLIENT PAUSE) should delay a
# batch, not make us resend one that Redis will apply once it resumes.
SOCKET_TIMEOUT = 30.0


class EventPublisher:
    def __init__(self, stream: str, maxlen: int, capacity: int) -> None:
        self.stream = stream
        self.maxlen = maxlen
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._buffer: deque[dict[str, str]] = deque()
        self._in_flight = 0
        self._drops_unreported = 0
        self.dropped = 0
        self.published = 0
        self._dropping = False
        self._thread: threading.Thread | None = None

    def enqueue(self, envelope: dict) -> None:
        """Buffer one envelope for publishing. Never blocks on Redis, never raises."""
        try:
            item = stream_fields(envelope)
        except (TypeError, ValueError, KeyError):
            logger.exception("event %r is not serialisable; not published", envelope.get("type"))
            return
        if self._pid != os.getpid():
            # After a fork (Django-Q2 workers) the parent's thread and lock are not ours.
            self._reset()
        with self._lock:
            self._buffer.append(item)
            self._trim()
            self._idle.clear()
        if self._thread is None:
            self._start()
        self._wakeup.set()

    def _trim(self) -> None:
        """Drop the oldest buffered envelopes beyond capacity (caller holds the lock).

        A batch in flight is older than anything in the buffer and may yet be delivered, so it
        doesn't count here: the buffer may exceed capacity by one batch while a send is pending.
        If the send fails, the batch goes back to the front and this drops the oldest first.
        """
        excess = len(self._buffer) - self.capacity
        if excess <= 0:
            return
        for _ in range(excess):
            self._buffer.popleft()
        self.dropped += excess
        self._drops_unreported += excess
        if not self._dropping:
            self._dropping = True
            logger.warning(
                "event buffer full (%d); dropping the oldest events until the stream is reachable", self.capacity
            )

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="fleet-event-publisher", daemon=True)
            self._thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        client = new_client(STREAMS, socket_timeout=SOCKET_TIMEOUT)
        backoff = 0.05
        failing = False
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while True:
                with self._lock:
                    batch = [self._buffer.popleft() for _ in range(min(BATCH_SIZE, len(self._buffer)))]
                    self._in_flight = len(batch)
                    drops = self._drops_unreported
                    if not batch and not drops:
                        self._idle.set()
                        break
                try:
                    self._send(client, batch, drops)
                except (redis.RedisError, OSError) as exc:
                    with self._lock:
                        # Back to the front, in order; then trim what no longer fits.
                        self._buffer.extendleft(reversed(batch))
                        self._in_flight = 0
                        self._trim()
                    if not failing:
                        failing = True
                        logger.warning("event stream unreachable (%s); buffering events", exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                with self._lock:
                    self._in_flight = 0
                    self._drops_unreported -= drops
                    self.published += len(batch)
                    if self._dropping and not self._buffer:
                        self._dropping = False
                if failing:
                    failing = False
                    logger.warning("event stream reachable again; %d events dropped so far", self.dropped)
                backoff = 0.05

    def _send(self, client: redis.Redis, batch: list[dict[str, str]], drops: int) -> None:
        pipe = client.pipeline(transaction=False)
        for fields in batch:
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        if drops:
            pipe.incrby(DROPPED_KEY, drops)
        pipe.execute()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered so far is published; False if `timeout` passed first."""
        if self._pid != os.getpid() or self._thread is None:
            return True
        timeout = settings.FLEET_EVENT_FLUSH_TIMEOUT if timeout is None else timeout
        self._wakeup.set()
        if self._idle.wait(timeout):
            return True
        with self._lock:
            pending = len(self._buffer) + self._in_flight
        logger.warning("event stream flush timed out after %.1f s; %d events not published", timeout, pending)
        return False

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer) + self._in_flight


_publisher: EventPublisher | None = None
_publisher_lock = threading.Lock()


def get_publisher() -> EventPublisher:
    global _publisher
    if _publisher is None:
        with _publisher_lock:
            if _publisher is None:
                _publisher = EventPublisher(
                    settings.FLEET_EVENT_STREAM, settings.FLEET_EVENT_STREAM_MAXLEN, settings.FLEET_EVENT_BUFFER
                )
    return _publisher


def reset_publisher() -> None:
    """Flush and forget the process's publisher (tests change the stream settings)."""
    global _publisher
    with _publisher_lock:
        if _publisher is not None:
            _publisher.flush(timeout=2)
        _publisher = None


def dropped_total(client: redis.Redis) -> int:
    """Events dropped fleet-wide because a process's buffer overflowed."""
    return int(client.get(DROPPED_KEY) or 0)
