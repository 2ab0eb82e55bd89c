"""Prometheus collectors of the fleet, read at scrape time (fleet-wide): presence from Redis, alerts from the DB."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from django.db.models import Count, Q
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fleet.redis import get_client
from telemetry.dashboard import COALESCED_KEY
from telemetry.flusher import frame_totals
from telemetry.models import AlertRule
from telemetry.presence import fleet_counts

logger = logging.getLogger(__name__)


class FleetCollector:
    def collect(self) -> Iterator[Metric]:
        client = get_client()
        try:
            counts = fleet_counts(client)
            frames = frame_totals(client)
        except redis.RedisError as exc:
            # A scrape during an outage still serves the other collectors' numbers.
            logger.warning("fleet gauges unavailable: %s", exc)
            return
        yield GaugeMetricFamily(
            "fleet_active_connections",
            "Live robot WebSocket connections (presence leases), fleet-wide.",
            value=counts["active_connections"],
        )
        yield GaugeMetricFamily(
            "fleet_robots_connected", "Robots with at least one live connection.", value=counts["robots_connected"]
        )
        yield GaugeMetricFamily(
            "fleet_robots_reporting",
            "Robots whose last accepted frame is newer than TELEMETRY_STALE_AFTER.",
            value=counts["robots_reporting"],
        )
        family = CounterMetricFamily(
            "telemetry_frames", "Telemetry frames received from robots, by result.", labels=["result"]
        )
        for result in ("accepted", "rejected"):
            family.add_metric([result], frames[result])
        yield family


class AlertCollector:
    def collect(self) -> Iterator[Metric]:
        """fleet_alerts_active{rule}: every enabled rule, and any other rule that still has active alerts."""
        family = GaugeMetricFamily("fleet_alerts_active", "Active alerts, by rule.", labels=["rule"])
        rules = AlertRule.objects.annotate(active=Count("alerts", filter=Q(alerts__cleared_at=None))).order_by("name")
        for name, enabled, active in rules.values_list("name", "enabled", "active"):
            if enabled or active:
                family.add_metric([name], active)
        yield family


class FanoutCollector:
    """telemetry_fanout_coalesced_total, fleet-wide from Redis."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "telemetry_fanout_coalesced", "Robot frames replaced by a newer one before a slow dashboard received them."
        )
        try:
            family.add_metric([], int(get_client().get(COALESCED_KEY) or 0))
        except redis.RedisError as exc:
            logger.warning("telemetry_fanout_coalesced_total unavailable: %s", exc)
            return
        yield family
