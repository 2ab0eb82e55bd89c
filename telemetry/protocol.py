"""The robot protocol's version: WebSocket subprotocol negotiation and the published JSON Schemas.

The schemas in docs/protocol/v1/ are the contract; these views serve the same files, so the page a
firmware author reads and the URLs their tools fetch can never disagree.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

SUBPROTOCOL = "fleet-telemetry.v1"
VERSION = "v1"
# Every message type, by direction: the file docs/protocol/v1/<name>.json describes it.
ROBOT_SENDS = ("telemetry", "telemetry_batch", "ping")
SERVER_SENDS = ("ack", "pong", "error")
SCHEMA_NAMES = ROBOT_SENDS + SERVER_SENDS


class UnsupportedProtocol(Exception):
    """The client offered subprotocols, none of them one this server speaks."""


def choose_subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to echo: ours when offered, None when none was offered (v1 for old robots)."""
    if not offered:
        return None
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    raise UnsupportedProtocol(f"offers only {', '.join(offered)[:200]}; this server speaks {SUBPROTOCOL}")


def schema_path(name: str) -> Path:
    return Path(settings.BASE_DIR) / "docs" / "protocol" / VERSION / f"{name}.json"


@cache
def _schema_bytes(name: str) -> bytes:
    return schema_path(name).read_bytes()


@require_GET
def schema_index(request: HttpRequest) -> JsonResponse:
    def url(name: str) -> str:
        return request.build_absolute_uri(reverse("protocol-schema", args=[name]))

    return JsonResponse(
        {
            "version": VERSION,
            "subprotocol": SUBPROTOCOL,
            "robot_sends": {name: url(name) for name in ROBOT_SENDS},
            "server_sends": {name: url(name) for name in SERVER_SENDS},
        }
    )


@require_GET
def schema_file(request: HttpRequest, name: str) -> HttpResponse:
    if name not in SCHEMA_NAMES:
        detail = f"No schema {name!r} in protocol {VERSION}; see /api/telemetry/protocol/{VERSION}/."
        return JsonResponse({"detail": detail, "code": "schema_not_found"}, status=404)
    # Relative $refs (telemetry_batch -> telemetry.json) resolve against this URL as against the file.
    return HttpResponse(_schema_bytes(name), content_type="application/schema+json")
