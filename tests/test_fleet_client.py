"""The robot client library on its own: buffer, stamping, validation, reconnect policy. No server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from fleet_client import ClientEvent, RobotClient
from fleet_client.buffer import Buffer
from fleet_client.client import endpoint
from fleet_client.reconnect import Backoff, Next, after_close
from tests.servers import BASE_DIR, free_port

GOOD = {"cpu_usage": 45.2, "memory_usage": 62.8, "network_latency_ms": 12.5, "battery_percentage": 78.0}


def offline_client(tmp_path, **kwargs) -> RobotClient:
    return RobotClient(url="ws://127.0.0.1:9", robot_id="r2d2", token="t", **kwargs)


def test_it_stamps_increasing_seqs_and_timestamps_to_the_microsecond(tmp_path):
    client = offline_client(tmp_path)
    seqs = [client.submit(dict(GOOD)) for _ in range(1000)]
    assert seqs == list(range(1000))
    stamps = [ts for ts, _ in client._buffer.frames.values()]
    assert all(later - earlier >= 0.95e-6 for earlier, later in zip(stamps, stamps[1:], strict=False))
    assert client.stats == {
        "submitted": 1000,
        "acked": 0,
        "dropped": 0,
        "rejected": 0,
        "reconnects": 0,
        "buffered": 1000,
        "stopped": None,
    }


def test_it_keeps_a_timestamp_the_caller_gives(tmp_path):
    client = offline_client(tmp_path)
    client.submit({**GOOD, "ts": 1_700_000_000.5})
    assert next(iter(client._buffer.frames.values()))[0] == 1_700_000_000.5


@pytest.mark.parametrize(
    "frame, message",
    [
        ({**GOOD, "cpu_usage": 101}, "cpu_usage must be between 0 and 100"),
        ({**GOOD, "network_latency_ms": -1}, "network_latency_ms must be >= 0"),
        ({k: v for k, v in GOOD.items() if k != "memory_usage"}, "memory_usage must be a finite number"),
        ({**GOOD, "battery_percentage": True}, "battery_percentage must be a finite number"),
        ({**GOOD, "cpu_usage": float("nan")}, "cpu_usage must be a finite number"),
        ({**GOOD, "ts": "now"}, "ts must be a finite number"),
        ({**GOOD, "note": "x" * 5000}, "at most 4096 bytes"),
    ],
)
def test_it_refuses_at_submit_a_frame_the_server_would_refuse(tmp_path, frame, message):
    client = offline_client(tmp_path)
    with pytest.raises(ValueError, match=message):
        client.submit(frame)
    assert client.stats["submitted"] == 0 and client.stats["buffered"] == 0


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path):
    client = offline_client(tmp_path, buffer_path=str(tmp_path / "r2d2.buffer"), max_buffered=5)
    for _ in range(8):
        client.submit(dict(GOOD))
    assert list(client._buffer.frames) == [3, 4, 5, 6, 7]
    assert (client.stats["dropped"], client.stats["buffered"]) == (3, 5)
    assert list(Buffer(str(tmp_path / "r2d2.buffer"), 5).frames) == [3, 4, 5, 6, 7]


def test_the_buffer_file_survives_a_restart_and_seqs_never_repeat(tmp_path):
    path = str(tmp_path / "r2d2.buffer")
    first = offline_client(tmp_path, buffer_path=path)
    for _ in range(3):
        first.submit(dict(GOOD))
    first._buffer.remove([0, 1, 2])
    first.submit(dict(GOOD))
    first._buffer.close()
    second = offline_client(tmp_path, buffer_path=path)
    assert list(second._buffer.frames) == [3]
    assert second.submit(dict(GOOD)) == 4
    assert second.stats["buffered"] == 2


async def test_on_event_hears_each_failed_connect_and_why_the_client_stopped():
    events: list[ClientEvent] = []
    heard_two = asyncio.Event()

    def hear(event: ClientEvent) -> None:
        events.append(event)
        if len(events) == 2:
            heard_two.set()

    refused = RobotClient(url=f"ws://127.0.0.1:{free_port()}", robot_id="r2d2", token="t", on_event=hear)
    refused.backoff_cap = 0.1
    await refused.start()
    await asyncio.wait_for(heard_two.wait(), 5)
    await refused.close()
    assert events[:2] == [ClientEvent("connect_failed", reason="ConnectionRefusedError")] * 2

    events.clear()
    heard_two.clear()
    invalid = RobotClient(url="http://127.0.0.1:9", robot_id="r2d2", token="t", on_event=hear)
    await invalid.start()
    await asyncio.wait_for(heard_two.wait(), 5)
    await invalid.close()
    assert [event.kind for event in events] == ["connect_failed", "stopped"]
    assert events[1].reason == invalid.stats["stopped"] and events[1].reason.startswith("invalid URL: ")


def test_a_failing_on_event_is_logged_and_the_client_carries_on(caplog):
    def broken(event: ClientEvent) -> None:
        raise RuntimeError("bug")

    client = RobotClient(url="ws://127.0.0.1:9", robot_id="r2d2", token="t", on_event=broken)
    client.submit(dict(GOOD))
    client._settle([0], "acked")
    assert client.stats["acked"] == 1
    assert caplog.messages == ["robot r2d2: on_event failed on acked"]


@pytest.mark.parametrize(
    "code, action",
    [
        (1001, Next.AT_ONCE),
        (4000, Next.AT_ONCE),
        (1011, Next.BACK_OFF),
        (1013, Next.BACK_OFF),
        (1008, Next.BACK_OFF),
        (None, Next.BACK_OFF),
        (4429, Next.RETRY_AFTER),
        (4403, Next.STOP),
        (4409, Next.STOP),
    ],
)
def test_each_close_code_has_its_documented_action(code, action):
    assert after_close(code)[0] is action


def test_backoff_is_full_jitter_from_half_a_second_up_to_a_minute():
    backoff = Backoff()
    ceilings = [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    for ceiling in ceilings:
        assert 0 <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_it_builds_the_robot_route_from_the_server_url():
    assert endpoint("ws://h:8000/", "r2d2") == "ws://h:8000/api/telemetry/ws/r2d2"
    assert endpoint("wss://h/api/telemetry/ws/r2d2", "r2d2") == "wss://h/api/telemetry/ws/r2d2"


def test_the_library_installs_alone_with_websockets_its_only_dependency_and_imports_no_django():
    pyproject = (BASE_DIR / "clients" / "python" / "pyproject.toml").read_text()
    assert 'dependencies = ["websockets>=14.0"]' in pyproject
    code = (
        "import sys, fleet_client, fleet_client.__main__; "
        "print(sorted(m for m in sys.modules if m.startswith(('django', 'telemetry', 'fleet.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR / "clients" / "python", capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
