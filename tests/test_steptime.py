"""Step-time checks on hand-made series: the slow stretch of a run, two modes across processes."""

from __future__ import annotations

import pytest

from facefold.train.steptime import StepTimeWatch, slow_stretch, two_modes


def test_a_sustained_jump_to_twice_the_pace_is_found_where_it_starts() -> None:
    # Four windows at 0.35 s/step (median 0.35), then 0.70: 2.0x from window 4 on.
    assert slow_stretch([0.35, 0.36, 0.34, 0.35, 0.70, 0.71, 0.69]) == 4


def test_a_short_burst_is_not_a_stretch() -> None:
    # Two slow windows, then back: three in a row are needed.
    assert slow_stretch([0.35, 0.35, 0.35, 0.35, 0.70, 0.70, 0.35, 0.35]) is None


def test_the_factor_is_of_the_median_before_the_jump() -> None:
    # Median of the first five is 1.0; 1.69 stays under 1.7 x 1.0, 1.7 is at it.
    assert slow_stretch([1.0, 0.9, 1.0, 1.1, 1.0, 1.69, 1.69, 1.69]) is None
    assert slow_stretch([1.0, 0.9, 1.0, 1.1, 1.0, 1.7, 1.7, 1.7]) == 5


def test_a_run_slow_from_its_start_has_no_jump_and_too_few_windows_say_nothing() -> None:
    assert slow_stretch([0.7] * 10) is None
    assert slow_stretch([0.35, 0.35, 0.35, 0.7, 0.7, 0.7]) is None  # 3 windows before: < 4


@pytest.mark.parametrize(("seconds", "split"), [
    ([0.682, 0.366], True),         # the two bench runs: 1.86x
    ([0.355, 0.361, 0.349], False),  # the plain script's six runs, 349-361 ms
    ([0.35], False),                 # one timing cannot show two modes
])
def test_two_modes(seconds: list[float], split: bool) -> None:
    assert two_modes(seconds) is split


def test_watch_warns_once_with_the_numbers() -> None:
    """Windows of 2 steps; a fake clock ticks 1 s per step for 8 windows, then 2 s."""
    lines: list[str] = []
    now = [0.0]
    watch = StepTimeWatch("run", lines.append, window=2, clock=lambda: now[0])
    for tick in [1.0] * 17 + [2.0] * 12:
        now[0] += tick
        watch.step_done()
    # The first call opens the window; then 8 windows at 1 s and 6 windows at 2 s.
    assert watch.windows == [1.0] * 8 + [2.0] * 6
    assert len(lines) == 1
    assert "from 1.000 to 2.000 s/step (2.0x) for the last 6 steps" in lines[0]
    assert "Ctrl-C" in lines[0] and "uptime" in lines[0]


def test_watch_restart_leaves_pauses_out() -> None:
    now = [0.0]
    watch = StepTimeWatch("run", lambda _: None, window=2, clock=lambda: now[0])
    for _ in range(3):
        now[0] += 1.0
        watch.step_done()
    watch.restart()
    now[0] += 100.0  # evaluation
    for _ in range(3):
        now[0] += 1.0
        watch.step_done()
    assert watch.windows == [1.0, 1.0]
