"""The dashboards' group on the "fanout" channel layer (Redis Pub/Sub). Any app may publish to it."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

GROUP = "fleet.dashboard"
LAYER = "fanout"  # settings.CHANNEL_LAYERS


async def asend(message: dict) -> None:
    """Send one message to every dashboard, in every process. Raises the layer's and Redis' errors."""
    layer = get_channel_layer(LAYER)
    if layer is not None:
        await layer.group_send(GROUP, message)


def send(message: dict) -> None:
    """`asend` from sync code (a Django-Q2 job, a signal receiver)."""
    async_to_sync(asend)(message)
