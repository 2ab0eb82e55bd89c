"""Who the client is, and whether it came over TLS, when a reverse proxy stands in front.

A proxy's X-Forwarded-For and X-Forwarded-Proto are believed only when the peer is one of
settings.FLEET_TRUSTED_PROXIES: a count (that many proxies in front; the peer is always the
nearest), or a list of addresses and networks (the peer, and each hop read from the right of
X-Forwarded-For, must be one of them to be skipped). Anyone else could write those headers.

TrustedProxies rewrites the ASGI scope's "client" and "scheme" before Django or a consumer sees it,
so REMOTE_ADDR (and so DRF's throttles, which read only it: NUM_PROXIES is 0), request.is_secure(),
SECURE_SSL_REDIRECT and the robots' TLS requirement all agree. RobotsRequireTLS guards the robot route.
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings

logger = logging.getLogger(__name__)

SECURE_SCHEMES = {"https", "wss"}


def _header(scope: dict, name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]
    return ",".join(values)


def _is_trusted(address: str | None, proxies: list) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def resolve(
    peer: str | None, forwarded_for: str, forwarded_proto: str, trusted: int | list
) -> tuple[str | None, str | None]:
    """(client address, scheme the client used) as the trusted proxies tell it; None where they don't."""
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    proto = forwarded_proto.split(",")[0].strip().lower() or None
    if isinstance(trusted, int):
        if trusted == 0:
            return peer, None
        # The peer is the nearest proxy; the other trusted - 1 appended themselves to the header.
        return (hops[-min(trusted, len(hops))] if hops else peer), proto
    if not _is_trusted(peer, trusted):
        return peer, None
    client = peer
    for hop in reversed(hops):
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return client, proto


class TrustedProxies:
    """ASGI middleware: the scope's client and scheme, as the trusted proxies in front report them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in {"http", "websocket"}:
            trusted = settings.FLEET_TRUSTED_PROXIES
            if trusted:
                peer = scope["client"][0] if scope.get("client") else None
                client, proto = resolve(
                    peer, _header(scope, b"x-forwarded-for"), _header(scope, b"x-forwarded-proto"), trusted
                )
                scope = dict(scope)
                if client is not None and client != peer:
                    scope["client"] = (client, 0)
                if proto in {"http", "https"}:
                    secure = proto == "https"
                    if scope["type"] == "websocket":
                        scope["scheme"] = "wss" if secure else "ws"
                    else:
                        scope["scheme"] = proto
        return await self.app(scope, receive, send)


def arrived_over_tls(scope: dict) -> bool:
    return scope.get("scheme") in SECURE_SCHEMES


class RobotsRequireTLS:
    """Refuse (HTTP 403) a robot handshake that did not arrive over TLS while ROBOTS_REQUIRE_TLS is on.

    Robots send their token on the handshake; over plain ws:// anyone on the path could read it.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if not settings.ROBOTS_REQUIRE_TLS or arrived_over_tls(scope):
            return await self.app(scope, receive, send)
        message = await receive()
        if message["type"] == "websocket.connect":
            client = scope["client"][0] if scope.get("client") else "unknown"
            # The path names the robot; the token (header or query string) is never logged.
            logger.warning("refused a robot handshake from %s to %s: not over TLS", client, scope.get("path"))
            await send({"type": "websocket.close"})
