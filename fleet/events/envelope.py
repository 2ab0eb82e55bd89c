"""The Charter v1.0 event envelope."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from datetime import UTC, datetime

SOURCES = {"metrics": "metrics_service", "telemetry": "telemetry_service"}

# A random start and a counter make the 6 hex digits unique within a process even when it
# emits many events in one millisecond; across processes they are as good as random.
_suffixes = itertools.count(secrets.randbelow(1 << 24))
# One encoder for every entry: json.dumps with options builds a new one per call.
_json = json.JSONEncoder(separators=(",", ":")).encode


def make_envelope(event_type: str, payload: dict, correlation_id: str | None = None) -> dict:
    module = event_type.split(".", 1)[0]
    now = time.time()
    return {
        "id": f"evt_{module}_{int(now * 1000)}_{next(_suffixes) & 0xFFFFFF:06x}",
        "type": event_type,
        "source": SOURCES[module],
        "target": None,
        "timestamp": now,
        "payload": payload,
        "meta": {
            "correlation_id": correlation_id,
            "version": "1.0",
            "schema_version": 1,
            "producer": "fleet",
            "source_module": module,
        },
    }


def stream_fields(envelope: dict) -> dict[str, str]:
    """The fields of the envelope's stream entry: `type` and `data` (the whole envelope as JSON), and
    beside them the platform's layout, one field per envelope key (see docs/compatibility.md)."""
    fields = {
        "type": envelope["type"],
        "data": _json(envelope),
        "id": envelope["id"],
        "source": envelope["source"],
        "timestamp": datetime.fromtimestamp(envelope["timestamp"], tz=UTC).isoformat(),
        "payload": _json(envelope["payload"]),
        "meta": _json(envelope["meta"]),
    }
    if envelope["target"] is not None:  # the platform leaves null fields out
        fields["target"] = envelope["target"]
    return fields
