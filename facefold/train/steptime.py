"""Step times that jump: a run's own slow stretch, and the spread of timings across processes.

On the 2-vCPU EPYC VMs facefold is measured on, a training process sometimes runs at half
its speed for no reason it can see (docs/performance.md, "The 2x mode"): the same step
takes about twice as long, for minutes or for the whole process, and other jobs on the cores
look the same from inside. :func:`slow_stretch` finds where a run's step times jump to at
least :data:`SLOW_FACTOR` times their median before the jump and stay there for
:data:`SUSTAINED` windows in a row; :class:`StepTimeWatch` (a training callback) warns once
when that happens, saying what the user can do. :func:`two_modes` says whether timings of
the same work in separate processes (``facefold bench``'s rounds) fall in two modes.
One such mode had a cause facefold removes: a ``model.fit`` whose end waited for tf.data's
autotuning thread (:func:`facefold.data.pipeline.without_autotuning`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from facefold.log import Log

SLOW_FACTOR = 1.7  # the 2x mode, with room for noise: ordinary jitter stays well under it
SUSTAINED = 3  # windows in a row: one slow window is a burst of load, not a mode
MIN_WINDOWS = 4  # windows before a jump, so that their median is the run's own pace
WINDOW_STEPS = 25  # steps per timed window of a training run


def slow_stretch(window_seconds: Sequence[float], factor: float = SLOW_FACTOR,
                 sustained: int = SUSTAINED, min_windows: int = MIN_WINDOWS) -> int | None:
    """The index of the first window of the first sustained slow stretch of ``window_seconds``
    (seconds per step of consecutive windows), or None.

    A stretch is ``sustained`` windows in a row, each at least ``factor`` times the median of
    every window before the stretch (at least ``min_windows`` of them)."""
    for start in range(min_windows, len(window_seconds) - sustained + 1):
        pace = statistics.median(window_seconds[:start])
        if all(s >= factor * pace for s in window_seconds[start : start + sustained]):
            return start
    return None


def two_modes(seconds: Sequence[float], factor: float = SLOW_FACTOR) -> bool:
    """Whether timings of the same work (one per process) split into a fast and a slow mode:
    the slowest at least ``factor`` times the fastest."""
    return len(seconds) > 1 and max(seconds) >= factor * min(seconds)


def slow_message(name: str, pace: float, slow: float, steps: int) -> str:
    """The warning of a slow stretch: what happened, and what the user can do."""
    return (f"[{name}] warning: steps slowed from {pace:.3f} to {slow:.3f} s/step "
            f"({slow / pace:.1f}x) for the last {steps} steps. Other jobs on this machine's "
            "cores do this (check `uptime`); so does a slow mode some VMs fall into that "
            "lasts the whole process (docs/performance.md, \"The 2x mode\"). If the cores "
            "are free, stop with Ctrl-C and run the same command again: it resumes from "
            "its last checkpoint in a new process, usually at full speed.")


class StepTimeWatch:
    """Times a run's steps in windows of ``window`` steps and logs :func:`slow_message`
    once, at the end of the first sustained slow stretch (:func:`slow_stretch`).

    Call :meth:`step_done` after each step (a training callback does); ``clock`` is
    ``time.perf_counter`` unless a test gives another."""

    def __init__(self, name: str, log: Log, window: int = WINDOW_STEPS,
                 clock=time.perf_counter) -> None:
        self.name, self.log, self.window, self.clock = name, log, window, clock
        self.windows: list[float] = []
        self._start: float | None = None
        self._steps = 0
        self.warned = False

    def restart(self) -> None:
        """Forget the open window (a pause outside training: evaluation, checkpointing)."""
        self._start, self._steps = None, 0

    def step_done(self) -> None:
        now = self.clock()
        if self._start is None:  # the first step after a pause opens the window
            self._start = now
            return
        self._steps += 1
        if self._steps < self.window:
            return
        self.windows.append((now - self._start) / self._steps)
        self._start, self._steps = now, 0
        if self.warned:
            return
        start = slow_stretch(self.windows)
        if start is not None:
            self.warned = True
            slow = statistics.median(self.windows[start:])
            self.log(slow_message(self.name, statistics.median(self.windows[:start]), slow,
                                  (len(self.windows) - start) * self.window))
