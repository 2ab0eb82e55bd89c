"""Prometheus exposition of the database counters, read at scrape time so every process reports the same numbers."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from metrics.aggregation import JOB_ID as AGGREGATION_JOB_ID
from metrics.counters import MISSION_ENTRIES_INVALID, MISSION_ENTRIES_LOST, MISSION_STATUS
from metrics.models import Counter, JobRuns

# Exposed even before their first increment, so alerts can be written against them from day one.
KNOWN_COUNTERS = {
    MISSION_STATUS: "Mission status updates counted from the mission stream, by status.",
    MISSION_ENTRIES_INVALID: "Mission stream entries skipped as invalid (no data, bad JSON, bad status).",
    MISSION_ENTRIES_LOST: "Mission stream entries trimmed from the stream before they were counted.",
}

# Unlabelled, so they can be shown as 0 before the row exists.
UNLABELLED_FROM_ZERO = (MISSION_ENTRIES_INVALID, MISSION_ENTRIES_LOST)


class CounterCollector:
    """Every Counter row, one counter family per name; a row's labels become its sample's labels."""

    def collect(self) -> Iterator[Metric]:
        families = {name: CounterMetricFamily(name, help_text) for name, help_text in KNOWN_COUNTERS.items()}
        rows = Counter.objects.order_by("name", "id").values_list("name", "labels", "value")
        for name, labels, value in rows.iterator(chunk_size=2000):
            family = families.get(name)
            if family is None:
                family = families[name] = CounterMetricFamily(name, f"Counter {name}.")
            # CounterMetricFamily strips a `_total` suffix from the family name; samples carry it.
            sample_labels = {key: str(label) for key, label in labels.items()}
            family.samples.append(Sample(f"{family.name}_total", sample_labels, value))
        for name in UNLABELLED_FROM_ZERO:
            if not families[name].samples:
                families[name].samples.append(Sample(name, {}, 0))
        yield from families.values()


class JobRunsCollector:
    """metrics_aggregation_runs_total{result} and metrics_aggregation_last_duration_seconds, from the database."""

    def collect(self) -> Iterator[Metric]:
        row = JobRuns.objects.filter(job_id=AGGREGATION_JOB_ID).values("completed", "failed", "last_duration_seconds")
        row = row.first() or {"completed": 0, "failed": 0, "last_duration_seconds": None}
        runs = CounterMetricFamily(
            "metrics_aggregation_runs", "Mission aggregation runs (in qcluster), by result.", labels=["result"]
        )
        for result in ("completed", "failed"):
            runs.add_metric([result], row[result])
        yield runs
        if row["last_duration_seconds"] is not None:
            yield GaugeMetricFamily(
                "metrics_aggregation_last_duration_seconds",
                "How long the latest mission aggregation run took.",
                value=row["last_duration_seconds"],
            )


@cache
def _collector_classes(paths: tuple[str, ...]) -> list[type]:
    return [import_string(path) for path in paths]


def build_registry() -> CollectorRegistry:
    """A fresh registry of the collectors in settings.METRICS_COLLECTORS (per scrape: they read live data)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector_class in _collector_classes(tuple(settings.METRICS_COLLECTORS)):
        registry.register(collector_class())
    return registry


def exposition() -> bytes:
    return generate_latest(build_registry())
