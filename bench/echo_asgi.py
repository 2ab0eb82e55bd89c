"""The framework floor: a minimal Channels AsyncJsonWebsocketConsumer that acks each frame.

Served by plain daphne: `daphne -b 127.0.0.1 -p 9002 bench.echo_asgi:application`. No channel layer
and no Django project settings, so it measures only daphne plus the stock consumer machinery.
"""

from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    # An empty CHANNEL_LAYERS: the consumer gets no layer, so it races no layer receive per message.
    settings.configure(CHANNEL_LAYERS={}, INSTALLED_APPS=["channels"], ALLOWED_HOSTS=["*"])
    django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import re_path


class EchoConsumer(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "telemetry_batch":
            frames = content.get("frames") or [{}]
            await self.send_json({"type": "ack", "seq": frames[-1].get("seq"), "accepted": len(frames)})
            return
        await self.send_json({"type": "ack", "seq": content.get("seq") if isinstance(content, dict) else None})


application = ProtocolTypeRouter({"websocket": URLRouter([re_path(r"^.*$", EchoConsumer.as_asgi())])})
