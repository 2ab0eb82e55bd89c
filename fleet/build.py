"""The running build's identity for Prometheus: `fleet_build_info{version, python} 1`."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

import fleet


class BuildInfoCollector:
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "fleet_build_info", "The running Fleet Telemetry version and Python version.", labels=["version", "python"]
        )
        family.add_metric([fleet.__version__, platform.python_version()], 1)
        yield family
