"""Reading the event stream back: newest-first pages for the API, and a tail for the command line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import redis
from django.conf import settings

STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")
# A page never scans more than this many entries looking for matches of a rare type.
SCAN_LIMIT = 10_000


def _decode(stream_id: bytes | str, fields: dict) -> dict:
    data = fields.get(b"data") or fields.get("data")
    event = json.loads(data)
    return {"stream_id": stream_id.decode() if isinstance(stream_id, bytes) else stream_id, **event}


def _type_of(fields: dict) -> str:
    value = fields.get(b"type") or fields.get("type") or b""
    return value.decode() if isinstance(value, bytes) else value


def recent_events(
    client: redis.Redis, type_prefix: str = "", before: str | None = None, limit: int = 50
) -> tuple[list[dict], str | None]:
    """Up to `limit` events older than `before` (a stream ID), newest first, and the cursor for the next page."""
    stream = settings.FLEET_EVENT_STREAM
    events: list[dict] = []
    upper = f"({before}" if before else "+"
    scanned = 0
    last_id = None
    while len(events) < limit and scanned < SCAN_LIMIT:
        count = min(1000, max(limit * 2, 100))
        entries = client.xrevrange(stream, max=upper, min="-", count=count)
        for stream_id, fields in entries:
            scanned += 1
            last_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            if _type_of(fields).startswith(type_prefix):
                events.append(_decode(stream_id, fields))
                if len(events) == limit:
                    break
        if len(entries) < count and len(events) < limit:
            return events, None  # reached the oldest entry
        upper = f"({last_id}"
    return events, last_id


def follow_events(
    client: redis.Redis, type_prefix: str = "", since: str = "$", block_ms: int = 1000, follow: bool = True
) -> Iterator[dict]:
    """Events after `since` in stream order; with follow, waits for new ones forever."""
    stream = settings.FLEET_EVENT_STREAM
    last = since
    if last == "$":
        newest = client.xrevrange(stream, count=1)
        last = newest[0][0].decode() if newest else "0-0"
    while True:
        if follow:
            reply = client.xread({stream: last}, count=1000, block=block_ms)
            entries = reply[0][1] if reply else []
        else:
            entries = client.xrange(stream, min=f"({last}", count=1000)
            if not entries:
                return
        for stream_id, fields in entries:
            last = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            if _type_of(fields).startswith(type_prefix):
                yield _decode(stream_id, fields)
