"""Refused robot handshakes, counted fleet-wide as `telemetry_handshakes_refused_total{reason}`.

A refusal costs no I/O on the handshake: it is counted in memory and this loop's flusher adds the
counts to one Redis hash every FLUSH_INTERVAL (and on shutdown), so a flood of bogus handshakes
costs one HINCRBY per reason per second, not one per handshake. The collector reads the hash at
scrape time, so every process reports the same totals.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client.core import CounterMetricFamily, Metric

from fleet import shutdown
from fleet.loops import per_loop
from fleet.redis import get_async_client, get_client

logger = logging.getLogger(__name__)

KEY = "telemetry:handshakes_refused"  # hash: reason -> count
FLUSH_INTERVAL = 1.0

BAD_CREDENTIALS = "bad_credentials"  # HTTP 403: malformed or unknown id, inactive robot, wrong or missing token
RECONNECTING_TOO_FAST = "reconnecting_too_fast"  # 4429
SERVER_SHUTDOWN = "server_shutdown"  # 1001: the process is stopping
REASONS = (BAD_CREDENTIALS, RECONNECTING_TOO_FAST, SERVER_SHUTDOWN)


class Refusals:
    """This loop's refusals not yet added to Redis."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.task: asyncio.Task | None = None

    def count(self, reason: str) -> None:
        self.pending[reason] += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_INTERVAL)
        await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, Counter()
        if not pending:
            return
        pipe = get_async_client().pipeline(transaction=False)
        for reason, count in pending.items():
            pipe.hincrby(KEY, reason, count)
        try:
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.pending.update(pending)  # kept for the next refusal's flush
            logger.warning("refused-handshake counts not written (%s); keeping them", exc)


get_refusals = per_loop(Refusals)


def count(reason: str) -> None:
    """Count one refused handshake (no I/O)."""
    get_refusals().count(reason)


async def flush() -> None:
    """Shutdown hook (and tests): write this loop's pending counts now."""
    refusals = get_refusals.peek()
    if refusals is not None:
        await refusals.flush()


shutdown.register(flush)


def totals(client: redis.Redis | None = None) -> dict[str, int]:
    raw = (client or get_client()).hgetall(KEY)
    return {reason: int(raw.get(reason.encode(), 0)) for reason in REASONS}


class RefusalCollector:
    def collect(self) -> Iterator[Metric]:
        try:
            counts = totals()
        except redis.RedisError as exc:
            logger.warning("refused-handshake counts unavailable: %s", exc)
            return
        family = CounterMetricFamily(
            "telemetry_handshakes_refused", "Robot handshakes refused, by reason, fleet-wide.", labels=["reason"]
        )
        for reason in REASONS:
            family.add_metric([reason], counts[reason])
        yield family
