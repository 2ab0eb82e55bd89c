"""Frame parsing and validation: plain functions, exact codes and details."""

from __future__ import annotations

import json

import pytest

from telemetry.frames import PING, Batch, FrameError, Telemetry, decode, parse_frame

NOW = 1_703_003_456.0
GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


def parse_message(text: str, now: float):
    """What the consumer does with one text message: decode, then parse."""
    obj = decode(text)
    return obj if isinstance(obj, FrameError) else parse_frame(obj, now)


def telemetry(**fields) -> str:
    return json.dumps({"type": "telemetry", **GOOD, **fields})


def test_it_parses_a_telemetry_frame():
    frame = parse_message(telemetry(seq=17, ts=NOW - 0.5), NOW)
    assert frame == Telemetry(seq=17, reported_at=NOW - 0.5, metrics=GOOD)


def test_it_uses_server_time_when_ts_is_absent_and_seq_is_optional():
    assert parse_message(telemetry(), NOW) == Telemetry(seq=None, reported_at=NOW, metrics=GOOD)


def test_it_ignores_unknown_extra_keys():
    assert parse_message(telemetry(seq=1, firmware="1.2.3", extra={"a": 1}), NOW).seq == 1


def test_it_accepts_integers_and_the_range_bounds():
    frame = parse_message(telemetry(cpu_usage=0, memory_usage=100, network_latency_ms=0, battery_percentage=100), NOW)
    assert frame.metrics == {
        "cpu_usage": 0.0,
        "memory_usage": 100.0,
        "network_latency_ms": 0.0,
        "battery_percentage": 100.0,
    }


def test_it_parses_a_ping():
    assert parse_message('{"type": "ping"}', NOW) is PING


@pytest.mark.parametrize(
    ("text", "code", "detail", "seq"),
    [
        (
            "{not json",
            "invalid_json",
            "message is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            None,
        ),
        ("[1, 2]", "invalid_frame", "frame must be a JSON object", None),
        ('"telemetry"', "invalid_frame", "frame must be a JSON object", None),
        ('{"seq": 3}', "invalid_frame", "type is required", 3),
        ('{"type": "selfie", "seq": 4}', "unknown_type", "type must be one of telemetry, telemetry_batch, ping", 4),
        (telemetry(seq=-1), "invalid_frame", "seq must be an integer between 0 and 2^63-1", None),
        (telemetry(seq=1.5), "invalid_frame", "seq must be an integer between 0 and 2^63-1", None),
        (telemetry(seq=True), "invalid_frame", "seq must be an integer between 0 and 2^63-1", None),
        (telemetry(seq=2**63), "invalid_frame", "seq must be an integer between 0 and 2^63-1", None),
        (telemetry(seq=5, cpu_usage=100.01), "invalid_frame", "cpu_usage must be between 0 and 100", 5),
        (telemetry(seq=5, memory_usage=-0.1), "invalid_frame", "memory_usage must be between 0 and 100", 5),
        (telemetry(seq=5, battery_percentage=101), "invalid_frame", "battery_percentage must be between 0 and 100", 5),
        (telemetry(seq=5, network_latency_ms=-1), "invalid_frame", "network_latency_ms must be at least 0", 5),
        (telemetry(seq=5, cpu_usage="45"), "invalid_frame", "cpu_usage must be a finite number", 5),
        (telemetry(seq=5, cpu_usage=True), "invalid_frame", "cpu_usage must be a finite number", 5),
        (telemetry(seq=5, cpu_usage=None), "invalid_frame", "cpu_usage is required", 5),
        (telemetry(seq=5, cpu_usage={"v": 1}), "invalid_frame", "cpu_usage must be a finite number", 5),
        (telemetry(seq=5, ts="now"), "invalid_frame", "ts must be a finite number (Unix seconds)", 5),
        (
            telemetry(seq=5, ts=NOW - 7 * 86400 - 1),
            "invalid_frame",
            "ts must be within 7 days before and 5 minutes after server time",
            5,
        ),
        (
            telemetry(seq=5, ts=NOW + 301),
            "invalid_frame",
            "ts must be within 7 days before and 5 minutes after server time",
            5,
        ),
    ],
)
def test_it_rejects_bad_frames_with_a_code_a_detail_and_the_seq(text, code, detail, seq):
    assert parse_message(text, NOW) == FrameError(code, detail, seq)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_it_rejects_non_finite_numbers_that_json_loads_accepts(literal):
    metrics = '"memory_usage": 1, "network_latency_ms": 1, "battery_percentage": 1'
    text = f'{{"type": "telemetry", "seq": 9, "cpu_usage": {literal}, {metrics}}}'
    assert parse_message(text, NOW) == FrameError("invalid_frame", "cpu_usage must be a finite number", 9)


def test_it_rejects_objects_nested_ten_thousand_deep():
    assert parse_message('{"a":' * 10_000 + "1" + "}" * 10_000, NOW) == FrameError(
        "invalid_frame", "message nests too deeply"
    )


def test_it_parses_a_batch_and_reports_each_invalid_frame_on_its_own():
    frames = [
        {**GOOD, "seq": 1, "ts": NOW - 60},
        {**GOOD, "seq": 2, "ts": NOW - 50, "battery_percentage": 120},
        {**GOOD, "seq": 3},
        {**GOOD, "seq": 4, "ts": NOW - 40, "type": "telemetry"},
    ]
    batch = parse_message(json.dumps({"type": "telemetry_batch", "frames": frames}), NOW)
    assert batch == Batch(
        frames=[Telemetry(1, NOW - 60, GOOD), Telemetry(4, NOW - 40, GOOD)],
        errors=[
            FrameError("invalid_frame", "frames[1].battery_percentage must be between 0 and 100", 2),
            FrameError("invalid_frame", "frames[2].ts is required in a batch", 3),
        ],
        last_seq=4,
    )


@pytest.mark.parametrize("frames", [[], "nope", [{**GOOD, "ts": NOW}] * 101])
def test_it_rejects_a_batch_without_one_to_a_hundred_frames(frames):
    assert parse_message(json.dumps({"type": "telemetry_batch", "frames": frames}), NOW) == FrameError(
        "invalid_frame", "frames must be a list of 1 to 100 telemetry objects"
    )


def test_it_rejects_batch_entries_that_are_not_objects_or_not_telemetry():
    batch = parse_message(json.dumps({"type": "telemetry_batch", "frames": [5, {"type": "ping", "seq": 8}]}), NOW)
    assert batch.frames == []
    assert batch.errors == [
        FrameError("invalid_frame", "frames[0] must be a JSON object"),
        FrameError("invalid_frame", "frames[1].type must be telemetry", 8),
    ]
    assert batch.last_seq == 8
