"""Frames as the client keeps them: checked on submit, stamped with seq and ts, stored as JSON text."""

from __future__ import annotations

import json
import math

# (name, minimum, maximum or None): the server's ranges (docs/protocol/v1/telemetry.json).
METRIC_RANGES = (
    ("cpu_usage", 0.0, 100.0),
    ("memory_usage", 0.0, 100.0),
    ("network_latency_ms", 0.0, None),
    ("battery_percentage", 0.0, 100.0),
)
MAX_BATCH = 100
# The server closes a connection with 1009 on a message over 65,536 bytes: stay well below it.
MAX_MESSAGE_BYTES = 60_000
MAX_FRAME_BYTES = 4_096
# The server refuses a ts more than 7 days old; frames older than this are not worth sending.
MAX_AGE = 7 * 24 * 3600.0 - 600.0


def check(frame: dict) -> None:
    """Raise ValueError for a frame the server would refuse, so it never enters the buffer."""
    if not isinstance(frame, dict):
        raise ValueError("a frame must be a dict")
    for name, low, high in METRIC_RANGES:
        value = frame.get(name)
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")
        if value < low or (high is not None and value > high):
            raise ValueError(f"{name} must be {f'between {low:g} and {high:g}' if high is not None else f'>= {low:g}'}")
    ts = frame.get("ts")
    if ts is not None and (type(ts) not in (int, float) or not math.isfinite(ts)):
        raise ValueError("ts must be a finite number of Unix seconds")


def encode(frame: dict, seq: int, ts: float) -> str:
    text = json.dumps({**frame, "type": "telemetry", "seq": seq, "ts": ts}, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) > MAX_FRAME_BYTES:
        raise ValueError(f"a frame must encode to at most {MAX_FRAME_BYTES} bytes")
    return text


def batch_message(texts: list[str]) -> str:
    return '{"type":"telemetry_batch","frames":[' + ",".join(texts) + "]}"
