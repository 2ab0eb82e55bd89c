"""WebSocket routes, each with its own guard.

Robots send no Origin header and authenticate with their token, so their route has no Origin check;
their token must arrive over TLS while ROBOTS_REQUIRE_TLS is on (fleet.proxies.RobotsRequireTLS).
Browsers authenticate with their session, so the dashboard's Origin must be one of
DASHBOARD_ALLOWED_ORIGINS (fleet.origins).
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from django.urls import path, re_path

from fleet.origins import DashboardOriginValidator
from fleet.proxies import RobotsRequireTLS
from telemetry.consumers import RobotConsumer
from telemetry.dashboard import DashboardConsumer
from telemetry.handshake import RobotTokenMiddleware

websocket_urlpatterns: list = [
    # Any robot_id reaches the guard, so malformed ones ("../", unicode, 10,000 characters) get the
    # same HTTP 403 as unknown ones instead of a routing error.
    re_path(r"^api/telemetry/ws/(?P<robot_id>.*)$", RobotsRequireTLS(RobotTokenMiddleware(RobotConsumer.as_asgi()))),
    path("api/telemetry/fleet/ws", DashboardOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi()))),
]
