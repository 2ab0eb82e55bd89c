"""Lifecycle signals of robot connections. The event bridge (fleet.events.bridge) publishes them.

Each is sent with the payload fields as keyword arguments:
- connection_established: robot_id, connection_id, timestamp
- connection_closed: robot_id, connection_id, duration_seconds, reason, close_code, timestamp
- metrics_published: robot_id, metrics ({cpu_usage, memory_usage, network_latency_ms,
  battery_percentage}), timestamp; and connection_id when it comes from a live connection
- alert_raised, alert_cleared (telemetry.alerts): rule, robot_id, metric, value, threshold, timestamp
"""

from __future__ import annotations

from django.dispatch import Signal

connection_established = Signal()
connection_closed = Signal()
metrics_published = Signal()
alert_raised = Signal()
alert_cleared = Signal()
