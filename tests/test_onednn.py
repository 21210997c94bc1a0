"""The oneDNN choice, with the timings faked: the faster setting is applied before TensorFlow
starts, cached per machine, and never overrides the user's own setting."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from facefold import machine
from facefold.machine import ONEDNN_CACHE_FILE, ONEDNN_ENV, apply_onednn_choice


class FakeTimer:
    def __init__(self, off: float, on: float) -> None:
        self.seconds = {"0": off, "1": on}
        self.calls: list[str] = []

    def __call__(self, value: str) -> float:
        self.calls.append(value)
        return self.seconds[value]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No oneDNN setting in the environment and TensorFlow not started, as in a new CLI."""
    monkeypatch.delenv(ONEDNN_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    return monkeypatch


@pytest.mark.parametrize(("off", "on", "value"), [
    (1.612, 0.976, "1"),  # an AVX2-only AMD EPYC: oneDNN 1.65x faster
    (0.300, 0.310, "0"),  # slower with it
    (1.000, 0.980, "0"),  # 2 %: within the margin, TensorFlow's default... is "off" here
])
def test_the_faster_setting_is_applied_and_cached(
    fresh: pytest.MonkeyPatch, tmp_path: Path, off: float, on: float, value: str
) -> None:
    timer = FakeTimer(off, on)
    said = apply_onednn_choice(measure=True, timer=timer, cache_dir=tmp_path)
    assert timer.calls == ["0", "1"]
    assert machine.os.environ[ONEDNN_ENV] == value
    assert f"{off:.3f} s/step without, {on:.3f} with" in said
    (entry,) = json.loads((tmp_path / ONEDNN_CACHE_FILE).read_text()).values()
    assert entry["value"] == value and entry["seconds"] == {"0": off, "1": on}
    # Another process on this machine: the cached choice, no timing.
    fresh.delenv(ONEDNN_ENV)
    apply_onednn_choice(measure=True, timer=FakeTimer(0, 0), cache_dir=tmp_path)
    assert machine.os.environ[ONEDNN_ENV] == value


def test_without_measure_nothing_is_timed(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said = apply_onednn_choice(measure=False, timer=FakeTimer(1, 0.5), cache_dir=tmp_path)
    assert "not measured" in said and ONEDNN_ENV not in machine.os.environ
    assert not (tmp_path / ONEDNN_CACHE_FILE).exists()


def test_the_users_setting_and_a_started_tensorflow_win(
    fresh: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fresh.setenv(ONEDNN_ENV, "0")
    timer = FakeTimer(1, 0.5)
    assert "set in the environment" in apply_onednn_choice(True, timer=timer,
                                                           cache_dir=tmp_path)
    assert machine.os.environ[ONEDNN_ENV] == "0" and not timer.calls
    fresh.delenv(ONEDNN_ENV)
    fresh.setitem(sys.modules, "tensorflow", object())
    assert "already started" in apply_onednn_choice(True, timer=timer, cache_dir=tmp_path)
    assert ONEDNN_ENV not in machine.os.environ and not timer.calls


def test_another_machine_times_again(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    apply_onednn_choice(True, timer=FakeTimer(1, 0.5), cache_dir=tmp_path)
    fresh.delenv(ONEDNN_ENV)
    fresh.setattr(machine, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8488C")
    timer = FakeTimer(0.3, 0.4)
    apply_onednn_choice(True, timer=timer, cache_dir=tmp_path)
    assert timer.calls == ["0", "1"] and machine.os.environ[ONEDNN_ENV] == "0"
    assert len(json.loads((tmp_path / ONEDNN_CACHE_FILE).read_text())) == 2


def test_a_corrupt_cache_is_timed_again(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ONEDNN_CACHE_FILE).write_text("{broken")
    timer = FakeTimer(1, 0.5)
    apply_onednn_choice(True, timer=timer, cache_dir=tmp_path)
    assert len(timer.calls) == 2
    assert isinstance(json.loads((tmp_path / ONEDNN_CACHE_FILE).read_text()), dict)


def test_commands_that_train_may_time_it_the_others_only_apply_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from facefold import cli

    asked: list[bool] = []
    monkeypatch.setattr(cli, "apply_onednn_choice",
                        lambda measure, log: asked.append(measure) or "")
    assert cli.main(["presets"]) == 0
    assert cli.main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 1
    assert asked == [False, True]
