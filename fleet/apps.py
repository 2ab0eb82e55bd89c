from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"

    def ready(self) -> None:
        # The bridge is the one place that turns signals into stream entries.
        from fleet import cluster
        from fleet.events import bridge

        bridge.connect()
        cluster.connect()
