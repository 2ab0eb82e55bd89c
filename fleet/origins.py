"""The dashboard socket's Origin check, against settings.DASHBOARD_ALLOWED_ORIGINS.

Browsers send their session cookie with any page's WebSocket, so the Origin header is what stops
another site (or a sibling subdomain) from opening a staff socket. Entries are exact origins; only
the default derived from ALLOWED_HOSTS leaves the port open (`https://host:*`), since ALLOWED_HOSTS
has none. An Origin must match scheme, host and port; a missing Origin never matches.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import OriginValidator
from django.conf import settings

DEFAULT_PORTS = {"http": 80, "https": 443}


def _port(parts) -> int | None:
    try:
        return parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a non-numeric port
        return None


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    if not origin:
        return False
    given = urlsplit(origin.strip().lower())
    for entry in allowed:
        any_port = entry.endswith(":*")
        wanted = urlsplit((entry[:-2] if any_port else entry).lower())
        if given.scheme != wanted.scheme or given.hostname != wanted.hostname:
            continue
        if any_port or _port(given) == _port(wanted):
            return True
    return False


class DashboardOriginValidator(OriginValidator):
    def __init__(self, application) -> None:
        super().__init__(application, allowed_origins=[])

    def valid_origin(self, parsed_origin) -> bool:
        # Read at each handshake, so the setting is the only list there is.
        return parsed_origin is not None and origin_allowed(parsed_origin.geturl(), settings.DASHBOARD_ALLOWED_ORIGINS)
