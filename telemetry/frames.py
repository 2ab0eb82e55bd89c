"""Robot frames: decoding and validation into Telemetry, Batch, Ping or FrameError. No I/O."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_BATCH = 100
MAX_SEQ = 2**63 - 1  # seq is stored in a BigIntegerField
TS_PAST = 7 * 24 * 3600.0
TS_FUTURE = 300.0
# (name, minimum, maximum or None)
METRIC_RANGES = (
    ("cpu_usage", 0.0, 100.0),
    ("memory_usage", 0.0, 100.0),
    ("network_latency_ms", 0.0, None),
    ("battery_percentage", 0.0, 100.0),
)
# The one list of metric names: storage, the REST API, the events' schema and the dashboard read it.
METRICS = tuple(name for name, _, _ in METRIC_RANGES)

INVALID_JSON = "invalid_json"
INVALID_FRAME = "invalid_frame"
UNKNOWN_TYPE = "unknown_type"
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class FrameError:
    code: str
    detail: str
    seq: int | None = None

    def message(self) -> dict:
        return {"type": "error", "code": self.code, "detail": self.detail, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Telemetry:
    seq: int | None
    reported_at: float
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class Batch:
    frames: list[Telemetry]
    errors: list[FrameError]
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


PING = Ping()
Frame = Telemetry | Batch | Ping


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `true` is not a number.
    return (type(value) is float or type(value) is int) and math.isfinite(value)


def _seq(obj: dict) -> int | None | FrameError:
    seq = obj.get("seq")
    if seq is None:
        return None
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        return FrameError(INVALID_FRAME, "seq must be an integer between 0 and 2^63-1")
    return seq


def peek_seq(obj: object) -> int | None:
    """The frame's seq when it is a valid one, for error replies; else None."""
    if isinstance(obj, dict):
        seq = obj.get("seq")
        if type(seq) is int and 0 <= seq <= MAX_SEQ:
            return seq
    return None


def parse_telemetry(obj: object, now: float, prefix: str = "", ts_required: bool = False) -> Telemetry | FrameError:
    """Validate one telemetry object; `prefix` names its place in a batch (e.g. "frames[3].")."""
    if not isinstance(obj, dict):
        return FrameError(INVALID_FRAME, f"{prefix[:-1] or 'frame'} must be a JSON object")
    seq = _seq(obj)
    if isinstance(seq, FrameError):
        return FrameError(INVALID_FRAME, prefix + seq.detail)
    ts = obj.get("ts")
    if ts is None:
        if ts_required:
            return FrameError(INVALID_FRAME, f"{prefix}ts is required in a batch", seq)
        ts = now
    elif not _is_number(ts):
        return FrameError(INVALID_FRAME, f"{prefix}ts must be a finite number (Unix seconds)", seq)
    elif not now - TS_PAST <= ts <= now + TS_FUTURE:
        return FrameError(
            INVALID_FRAME, f"{prefix}ts must be within 7 days before and 5 minutes after server time", seq
        )
    metrics = {}
    for name, low, high in METRIC_RANGES:
        value = obj.get(name)
        if value is None:
            return FrameError(INVALID_FRAME, f"{prefix}{name} is required", seq)
        if not _is_number(value):
            return FrameError(INVALID_FRAME, f"{prefix}{name} must be a finite number", seq)
        if value < low or (high is not None and value > high):
            why = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            return FrameError(INVALID_FRAME, f"{prefix}{name} must be {why}", seq)
        metrics[name] = float(value)
    return Telemetry(seq, float(ts), metrics)


def parse_batch(obj: dict, now: float) -> Batch | FrameError:
    """A backfill batch. Each frame is judged on its own: valid ones are accepted, invalid ones reported."""
    frames = obj.get("frames")
    if not isinstance(frames, list) or not 1 <= len(frames) <= MAX_BATCH:
        return FrameError(INVALID_FRAME, f"frames must be a list of 1 to {MAX_BATCH} telemetry objects")
    accepted: list[Telemetry] = []
    errors: list[FrameError] = []
    for index, item in enumerate(frames):
        prefix = f"frames[{index}]."
        if isinstance(item, dict) and item.get("type", "telemetry") != "telemetry":
            errors.append(FrameError(INVALID_FRAME, f"{prefix}type must be telemetry", peek_seq(item)))
            continue
        result = parse_telemetry(item, now, prefix, ts_required=True)
        (errors if isinstance(result, FrameError) else accepted).append(result)
    return Batch(accepted, errors, peek_seq(frames[-1]))


def decode(text: str) -> object | FrameError:
    """The JSON value of a message. NaN and Infinity parse here and are rejected as values later."""
    try:
        return json.loads(text)
    except ValueError as exc:
        return FrameError(INVALID_JSON, f"message is not valid JSON: {exc}")
    except RecursionError:
        return FrameError(INVALID_FRAME, "message nests too deeply")


def parse_frame(obj: object, now: float) -> Frame | FrameError:
    if not isinstance(obj, dict):
        return FrameError(INVALID_FRAME, "frame must be a JSON object")
    kind = obj.get("type")
    if kind == "telemetry":
        return parse_telemetry(obj, now)
    if kind == "telemetry_batch":
        return parse_batch(obj, now)
    if kind == "ping":
        return PING
    if kind is None:
        return FrameError(INVALID_FRAME, "type is required", peek_seq(obj))
    return FrameError(UNKNOWN_TYPE, "type must be one of telemetry, telemetry_batch, ping", peek_seq(obj))
