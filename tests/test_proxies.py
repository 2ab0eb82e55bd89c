"""Client address and scheme come from X-Forwarded-* only through FLEET_TRUSTED_PROXIES."""

from __future__ import annotations

import ipaddress

import pytest
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.test import override_settings

from fleet.proxies import TrustedProxies, resolve
from telemetry.connections import get_registry

NGINX = [ipaddress.ip_network("10.0.0.2/32"), ipaddress.ip_network("192.168.0.0/16")]


def test_with_no_trusted_proxy_the_headers_are_ignored():
    assert resolve("203.0.113.9", "198.51.100.1", "https", 0) == ("203.0.113.9", None)


def test_a_count_takes_the_address_that_many_hops_from_the_right():
    assert resolve("10.0.0.2", "198.51.100.1", "https", 1) == ("198.51.100.1", "https")
    # A client that writes its own X-Forwarded-For only adds hops on the left.
    assert resolve("10.0.0.2", "6.6.6.6, 198.51.100.1", "https", 1) == ("198.51.100.1", "https")
    assert resolve("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.7", "http", 2) == ("198.51.100.1", "http")
    assert resolve("10.0.0.2", "", "", 1) == ("10.0.0.2", None)


def test_a_list_believes_only_a_listed_peer_and_skips_listed_hops():
    assert resolve("10.0.0.2", "6.6.6.6, 198.51.100.1, 192.168.4.4", "https", NGINX) == ("198.51.100.1", "https")
    assert resolve("203.0.113.9", "198.51.100.1", "https", NGINX) == ("203.0.113.9", None)
    assert resolve("10.0.0.2", "not-an-address", "https", NGINX) == ("not-an-address", "https")


async def scope_seen(scope: dict) -> dict:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    communicator = ApplicationCommunicator(TrustedProxies(app), scope)
    await communicator.wait(timeout=2)
    return seen


HTTP = {"type": "http", "method": "GET", "path": "/", "scheme": "http", "client": ("10.0.0.2", 5555)}
FORWARDED = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.1"), (b"x-forwarded-proto", b"https")]


@override_settings(FLEET_TRUSTED_PROXIES=NGINX)
async def test_the_scope_gets_the_client_and_scheme_the_trusted_proxy_reports():
    seen = await scope_seen({**HTTP, "headers": FORWARDED})
    assert (seen["client"], seen["scheme"]) == (("198.51.100.1", 0), "https")

    socket = await scope_seen({**HTTP, "type": "websocket", "scheme": "ws", "headers": FORWARDED})
    assert (socket["client"], socket["scheme"]) == (("198.51.100.1", 0), "wss")


@override_settings(FLEET_TRUSTED_PROXIES=NGINX)
async def test_the_scope_is_left_alone_for_an_untrusted_peer():
    seen = await scope_seen({**HTTP, "client": ("203.0.113.9", 5555), "headers": FORWARDED})
    assert (seen["client"], seen["scheme"]) == (("203.0.113.9", 5555), "http")


def robot_socket(token: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    from fleet.asgi import application

    auth = (b"authorization", f"Bearer {token}".encode())
    return WebsocketCommunicator(application, "/api/telemetry/ws/r2d2", headers=[auth, *headers])


@pytest.mark.django_db(transaction=True)
@override_settings(ROBOTS_REQUIRE_TLS=True, FLEET_TRUSTED_PROXIES=1)
async def test_a_robot_handshake_not_over_tls_is_refused_and_one_over_tls_is_accepted(r2d2):
    # A close before accept: daphne answers the handshake with HTTP 403.
    assert await robot_socket(r2d2.token).connect(timeout=5) == (False, 1000)
    with override_settings(FLEET_TRUSTED_PROXIES=0):
        # Nobody is trusted to say so: the header alone proves nothing.
        assert await robot_socket(r2d2.token, (b"x-forwarded-proto", b"https")).connect(timeout=5) == (False, 1000)

    proxied = robot_socket(r2d2.token, (b"x-forwarded-proto", b"https"))
    connected, _ = await proxied.connect(timeout=5)
    assert connected is True
    await proxied.disconnect()
    await get_registry().stop()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://fleet.example.com", True),
        ("https://fleet.example.com:443", True),
        ("https://fleet.example.com:8443", False),
        ("http://fleet.example.com", False),
        ("https://evil.fleet.example.com", False),
        ("https://fleet.example.com.evil.example", False),
        ("https://ops.example.com:9000", True),
        ("http://ops.example.com:9000", False),
        (None, False),
    ],
)
def test_dashboard_origins_match_scheme_host_and_port_exactly(origin, allowed):
    from fleet.origins import origin_allowed

    assert origin_allowed(origin, ["https://fleet.example.com", "https://ops.example.com:*"]) is allowed


def test_drf_throttles_key_on_the_client_address_never_on_a_raw_forwarded_header(rf):
    from rest_framework.request import Request
    from rest_framework.throttling import AnonRateThrottle

    request = Request(rf.get("/api/telemetry/info", HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR="198.51.100.1"))
    assert AnonRateThrottle().get_ident(request) == "198.51.100.1"
