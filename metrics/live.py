"""Dashboards see the mission counters move: each run's changed counters go out on the fan-out."""

from __future__ import annotations

import logging

from fleet import fanout

logger = logging.getLogger(__name__)


def push_changed_counters(sender, counters: list[dict] = (), **kwargs) -> None:
    """Receiver of aggregation_completed: send the counters the run changed to every dashboard."""
    if not counters:
        return  # an idle run: no message, no query
    try:
        fanout.send({"type": "counters.update", "counters": counters})
    except Exception as exc:  # dashboards catch up on their next snapshot; the job must not fail
        logger.warning("could not push counters to dashboards: %s", exc)
