"""The per-socket frame budget: one rate_limited error a second at most, 1008 on a sustained flood."""

from __future__ import annotations

from django.test import override_settings

from telemetry.frame_rate import ADMIT, DROP, FLOOD, RATE_LIMITED, FrameRate


def verdicts(rate: FrameRate, per_second: int, seconds: int, start: float = 0.0) -> list[int]:
    return [rate.check(start + second + n / per_second) for second in range(seconds) for n in range(per_second)]


@override_settings(TELEMETRY_MAX_FRAMES_PER_SECOND=20)
def test_over_the_limit_only_the_first_dropped_frame_of_a_second_gets_an_error():
    rate = FrameRate(0.0)

    first_second = verdicts(rate, per_second=50, seconds=1)

    assert first_second == [ADMIT] * 20 + [RATE_LIMITED] + [DROP] * 29


@override_settings(TELEMETRY_MAX_FRAMES_PER_SECOND=20)
def test_a_robot_at_the_limit_is_never_refused():
    assert set(verdicts(FrameRate(0.0), per_second=20, seconds=30)) == {ADMIT}


@override_settings(TELEMETRY_MAX_FRAMES_PER_SECOND=20, TELEMETRY_FLOOD_FACTOR=5, TELEMETRY_FLOOD_SECONDS=5)
def test_more_than_five_times_the_limit_for_five_seconds_is_a_flood():
    rate = FrameRate(0.0)

    five_seconds = verdicts(rate, per_second=101, seconds=5)
    next_frame = rate.check(5.0)

    assert FLOOD not in five_seconds
    assert next_frame == FLOOD


@override_settings(TELEMETRY_MAX_FRAMES_PER_SECOND=20, TELEMETRY_FLOOD_FACTOR=5, TELEMETRY_FLOOD_SECONDS=5)
def test_a_burst_that_pauses_is_not_a_flood():
    rate = FrameRate(0.0)

    bursts = verdicts(rate, per_second=200, seconds=4) + verdicts(rate, per_second=10, seconds=1, start=4.0)
    bursts += verdicts(rate, per_second=200, seconds=4, start=5.0)

    assert FLOOD not in bursts
