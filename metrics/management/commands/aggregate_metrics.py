"""`manage.py aggregate_metrics`: run the mission aggregation once and print a one-line summary."""

from __future__ import annotations

import logging

from django.core.management.base import BaseCommand

from metrics import aggregation


class Command(BaseCommand):
    help = "Count new entries of the mission stream into counters once (what the schedule runs every 30 s)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=None, help="Entries per batch (METRICS_AGGREGATION_BATCH)."
        )
        parser.add_argument(
            "--max-entries",
            type=int,
            default=None,
            help="Entries at most in this run (METRICS_AGGREGATION_MAX_PER_RUN).",
        )

    def handle(self, *args, batch_size: int | None, max_entries: int | None, **options):
        # The job logs its summary for qcluster's log; here the summary is the output, so log only warnings.
        logger = logging.getLogger(aggregation.__name__)
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            result = aggregation.aggregate_mission_metrics(batch_size=batch_size, max_entries=max_entries)
        finally:
            logger.setLevel(level)
        self.stdout.write(result.summary())
