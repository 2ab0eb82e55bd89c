"""WebSocket routes of the telemetry app.

The robot route has no Origin check on purpose: robots send no Origin header, and they
authenticate with their token on the handshake (see telemetry.consumers), which must therefore
arrive over TLS while ROBOTS_REQUIRE_TLS is on (fleet.proxies.RobotsRequireTLS).
"""

from __future__ import annotations

from django.urls import re_path

from fleet.proxies import RobotsRequireTLS
from telemetry.consumers import RobotConsumer

websocket_urlpatterns: list = [
    # Any robot_id reaches the consumer, so malformed ones ("../", unicode, 10,000 characters) get the
    # same HTTP 403 as unknown ones instead of a routing error.
    re_path(r"^api/telemetry/ws/(?P<robot_id>.*)$", RobotsRequireTLS(RobotConsumer.as_asgi())),
]
