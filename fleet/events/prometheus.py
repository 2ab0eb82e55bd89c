"""Prometheus collector for the event stream, read from Redis at scrape time (fleet-wide)."""

from __future__ import annotations

import logging

import redis
from prometheus_client.core import CounterMetricFamily

from fleet.events.stream import dropped_total
from fleet.redis import STREAMS, get_client

logger = logging.getLogger(__name__)


class EventsCollector:
    def collect(self):
        family = CounterMetricFamily(
            "fleet_events_dropped", "Lifecycle events dropped because a process's event buffer overflowed."
        )
        try:
            family.add_metric([], dropped_total(get_client(STREAMS)))
        except redis.RedisError as exc:
            # A scrape during an outage still serves the database's counters.
            logger.warning("fleet_events_dropped_total unavailable: %s", exc)
            return
        yield family
