"""Lifecycle signals of the mission aggregation. The event bridge (fleet.events.bridge) publishes them.

Each is sent with `sender=<the job function>` and the payload fields as keyword arguments:
- aggregation_started: job_id, run_id, timestamp
- aggregation_completed: job_id, run_id, entries_processed, entries_skipped, duration_ms, timestamp, last_id;
  and counters, the changed counters' new values ([{name, labels, value}]), which no event carries
- aggregation_failed: job_id, run_id, error_message, error_type, timestamp
"""

from __future__ import annotations

from django.dispatch import Signal

aggregation_started = Signal()
aggregation_completed = Signal()
aggregation_failed = Signal()
