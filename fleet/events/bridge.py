"""The bridge from Django signals to the event stream.

The rule: business code only sends signals (metrics.signals, telemetry.signals); this module is the
only code that publishes events. From sync code the hand-over waits for the commit, so a rolled-back
transaction emits nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from django.db import transaction
from django.dispatch import Signal

from fleet.events.envelope import make_envelope
from fleet.events.schema import EVENT_SCHEMAS
from fleet.events.stream import get_publisher

logger = logging.getLogger(__name__)


def _signals() -> dict[str, Signal]:
    from metrics import signals as metrics_signals
    from telemetry import signals as telemetry_signals

    return {
        "metrics.aggregation_started": metrics_signals.aggregation_started,
        "metrics.aggregation_completed": metrics_signals.aggregation_completed,
        "metrics.aggregation_failed": metrics_signals.aggregation_failed,
        "telemetry.connection_established": telemetry_signals.connection_established,
        "telemetry.connection_closed": telemetry_signals.connection_closed,
        "telemetry.metrics_published": telemetry_signals.metrics_published,
        "telemetry.alert_raised": telemetry_signals.alert_raised,
        "telemetry.alert_cleared": telemetry_signals.alert_cleared,
    }


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def publish(event_type: str, payload: dict, correlation_id: str | None) -> None:
    envelope = make_envelope(event_type, payload, correlation_id)
    publisher = get_publisher()
    if _in_event_loop():
        publisher.enqueue(envelope)
    else:
        transaction.on_commit(lambda: publisher.enqueue(envelope))


def _receiver(event_type: str) -> Callable[..., None]:
    fields = tuple(EVENT_SCHEMAS[event_type])

    def receive(sender, **kwargs) -> None:
        # Publishing must never break the sender: log, don't raise.
        try:
            payload = {name: kwargs[name] for name in fields}
            correlation_id = kwargs.get("run_id") or kwargs.get("connection_id")
            publish(event_type, payload, correlation_id)
        except Exception:
            logger.exception("could not publish %s", event_type)

    receive.__name__ = f"publish_{event_type.replace('.', '_')}"
    return receive


def connect() -> None:
    for event_type, signal in _signals().items():
        signal.connect(_receiver(event_type), weak=False, dispatch_uid=f"fleet.events.bridge:{event_type}")
