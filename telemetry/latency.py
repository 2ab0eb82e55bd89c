"""This process's own latency histograms, exposed by /metrics (fleet.settings.METRICS_COLLECTORS).

Unlike the fleet-wide figures read from Redis and the database at scrape time, these are per
process, like Django's and daphne's own: a scrape reaches one process, so scrape each daphne on
its own (a target per process) and aggregate in Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric

# The consumer times one frame in ACK_SAMPLE: timing every one would cost more than the ack.
ACK_SAMPLE = 16

_registry = CollectorRegistry(auto_describe=True)

HANDSHAKE = Histogram(
    "telemetry_handshake_duration_seconds",
    "Robot WebSocket handshake: connect received to accept sent (token check and connect-rate lease).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=_registry,
)
ACK_LATENCY = Histogram(
    "telemetry_ack_latency_seconds",
    f"Robot frame received to its ack sent, one frame in {ACK_SAMPLE}.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
    registry=_registry,
)
FLUSH_DURATION = Histogram(
    "telemetry_flush_duration_seconds",
    "One flush of the ingest state: the Redis pipeline (stage=redis) or the history transaction (stage=db).",
    labelnames=["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=_registry,
)
FANOUT_LAG = Histogram(
    "telemetry_fanout_lag_seconds",
    "Frame received to the fan-out message that carries it published, for the oldest frame of each fan-out.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=_registry,
)


class LatencyCollector:
    """The four histograms of this process."""

    def collect(self) -> Iterator[Metric]:
        yield from _registry.collect()
