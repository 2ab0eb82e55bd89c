"""ASGI entry point: Django for HTTP, the telemetry consumers for WebSockets."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
# Initialise Django before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from fleet.proxies import TrustedProxies  # noqa: E402
from telemetry import routing  # noqa: E402

# Client address and scheme come from X-Forwarded-* only through FLEET_TRUSTED_PROXIES, for both protocols.
application = TrustedProxies(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Each route carries its own guard (see telemetry.routing).
            "websocket": URLRouter(routing.websocket_urlpatterns),
        }
    )
)
