"""Prometheus collector (filled in with its capability)."""

from __future__ import annotations


class FleetCollector:
    def collect(self):
        return iter(())
