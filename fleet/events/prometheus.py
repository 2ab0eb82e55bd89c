"""Prometheus collector (filled in with its capability)."""

from __future__ import annotations


class EventsCollector:
    def collect(self):
        return iter(())
