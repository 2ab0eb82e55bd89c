"""Counters shared by every process, their history, and the aggregation cursor."""

from __future__ import annotations

from django.db import models


class Counter(models.Model):
    """A monotonically increasing count; `labels` are stored with their keys in sorted order."""

    name = models.CharField(max_length=200)
    labels = models.JSONField(default=dict, blank=True)
    value = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metrics_counter_name_labels")]

    def __str__(self) -> str:
        return f"{self.name}{format_labels(self.labels)}"


class CounterSnapshot(models.Model):
    """A counter's value at the end of an aggregation run that changed it."""

    counter = models.ForeignKey(Counter, on_delete=models.CASCADE, related_name="snapshots")
    value = models.BigIntegerField()
    taken_at = models.DateTimeField()
    # Set when the run found entries that were trimmed from the stream before they were counted.
    gap = models.BooleanField(default=False)
    note = models.CharField(max_length=500, blank=True, default="")
    # The aggregation run that took it, so a run's changed counters can be found afterwards.
    run_id = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        ordering = ["-taken_at", "-id"]
        indexes = [
            models.Index(fields=["counter", "taken_at"], name="metrics_snapshot_history"),
            # Pruning deletes by age across all counters.
            models.Index(fields=["taken_at"], name="metrics_snapshot_taken_at"),
        ]

    def __str__(self) -> str:
        return f"{self.counter} = {self.value} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class StreamCursor(models.Model):
    """How far a Redis stream has been counted: the last stream ID whose entry is in the counters."""

    stream = models.CharField(max_length=200, unique=True)
    last_id = models.CharField(max_length=41, default="0-0")
    # Entries ever added to the stream up to and including last_id, when known (Redis 7's
    # XINFO entries-added lets us compute how many entries a trim took before we counted them).
    position = models.BigIntegerField(null=True, blank=True, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.stream} @ {self.last_id}"


class JobRuns(models.Model):
    """How often a scheduled job has run, by result, and how long its latest run took (read by /metrics).

    The jobs run in qcluster, which no scrape reaches, so their figures live here.
    """

    job_id = models.CharField(max_length=100, unique=True)
    completed = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    last_duration_seconds = models.FloatField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "job runs"

    def __str__(self) -> str:
        return self.job_id


def format_labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"
