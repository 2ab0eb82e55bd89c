"""The six lifecycle events, the two alert events that extend them, and the exact fields of their payloads."""

from __future__ import annotations

from numbers import Real

from telemetry.closes import CLOSE_REASONS
from telemetry.frames import METRICS

METRICS_FIELDS = set(METRICS)

# `value` is the metric's value (for `reporting`: seconds since the robot's last frame); `threshold`
# is the level crossed (on clear: the clear threshold when the rule has one).
ALERT_PAYLOAD: dict[str, tuple[type, ...]] = {
    "rule": (str,),
    "robot_id": (str,),
    "metric": (str,),
    "value": (float,),
    "threshold": (float,),
    "timestamp": (float,),
}

# event type -> {payload field: allowed types}. `float` fields also take ints (json has one number type).
CHARTER_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "metrics.aggregation_started": {"job_id": (str,), "run_id": (str,), "timestamp": (float,)},
    "metrics.aggregation_completed": {
        "job_id": (str,),
        "run_id": (str,),
        "entries_processed": (int,),
        "entries_skipped": (int,),
        "duration_ms": (float,),
        "timestamp": (float,),
        "last_id": (str, type(None)),
    },
    "metrics.aggregation_failed": {
        "job_id": (str,),
        "run_id": (str,),
        "error_message": (str,),
        "error_type": (str,),
        "timestamp": (float,),
    },
    "telemetry.connection_established": {"robot_id": (str,), "connection_id": (str,), "timestamp": (float,)},
    "telemetry.connection_closed": {
        "robot_id": (str,),
        "connection_id": (str,),
        "duration_seconds": (float,),
        "reason": (str,),
        "close_code": (int, type(None)),
        "timestamp": (float,),
    },
    "telemetry.metrics_published": {"robot_id": (str,), "metrics": (dict,), "timestamp": (float,)},
}
# Extensions of the Charter's six, in the same envelope (telemetry.alerts).
EXTENSION_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "telemetry.alert_raised": ALERT_PAYLOAD,
    "telemetry.alert_cleared": ALERT_PAYLOAD,
}
EVENT_SCHEMAS = {**CHARTER_SCHEMAS, **EXTENSION_SCHEMAS}


def _matches(value: object, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if float in types and isinstance(value, Real):
        return True
    return isinstance(value, types)


def payload_errors(event_type: str, payload: dict) -> list[str]:
    """Every way `payload` differs from its schema; empty when it conforms exactly."""
    schema = EVENT_SCHEMAS.get(event_type)
    if schema is None:
        return [f"unknown event type {event_type!r}"]
    errors = [f"missing field {name!r}" for name in schema.keys() - payload.keys()]
    errors += [f"unexpected field {name!r}" for name in payload.keys() - schema.keys()]
    for name, types in schema.items():
        if name in payload and not _matches(payload[name], types):
            errors.append(f"{name!r} is {type(payload[name]).__name__}, expected {'/'.join(t.__name__ for t in types)}")
    if event_type == "telemetry.metrics_published" and isinstance(payload.get("metrics"), dict):
        if set(payload["metrics"]) != METRICS_FIELDS:
            errors.append(f"metrics must have exactly {sorted(METRICS_FIELDS)}")
    if event_type == "telemetry.connection_closed" and payload.get("reason") not in CLOSE_REASONS:
        errors.append(f"reason {payload.get('reason')!r} is not one of {sorted(CLOSE_REASONS)}")
    return errors
