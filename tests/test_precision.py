"""``train.precision: auto`` chooses by timing, with the timings faked: the choice, the cache
keyed by machine and model shape, and a resumed run keeping its precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from facefold import runs
from facefold.machine import default_cache_dir
from facefold.models.presets import resolve_config
from facefold.train import precision as precision_module
from facefold.train.precision import (
    CACHE_FILE,
    MARGIN,
    faster_precision,
    resolve_precision,
)
from facefold.train.trainer import Trainer


class FakeTimer:
    """Seconds per step by precision; counts the timings asked for."""

    def __init__(self, float32: float, bfloat16: float) -> None:
        self.seconds = {"float32": float32, "bfloat16": bfloat16}
        self.calls: list[str] = []

    def __call__(self, precision: str) -> float:
        self.calls.append(precision)
        return self.seconds[precision]


def _never(precision: str) -> float:
    raise AssertionError(f"timed {precision} although the choice was cached")


CONFIG = resolve_config("seed")


@pytest.mark.parametrize(("float32", "bfloat16", "expected"), [
    (0.301, 0.405, "float32"),  # bfloat16 slower (an Intel VM with AVX512_BF16)
    (0.375, 0.221, "bfloat16"),  # bfloat16 1.7x faster (a Zen 4 VM)
    (1.000, 0.980, "float32"),  # 2 % faster: within MARGIN, float32 is more exact
    (1.000, 0.960, "bfloat16"),  # 4 %: beyond it
    (0.300, 0.300, "float32"),
])
def test_the_faster_precision_is_chosen(float32: float, bfloat16: float, expected: str) -> None:
    assert MARGIN == 0.03
    assert faster_precision({"float32": float32, "bfloat16": bfloat16}) == expected


def test_auto_times_once_then_uses_the_cache(tmp_path: Path) -> None:
    timer = FakeTimer(0.375, 0.221)
    choice, reason = resolve_precision("auto", CONFIG, 18, timer=timer, cache_dir=tmp_path,
                                       gpu_bf16=False)
    assert choice == "bfloat16" and timer.calls == ["float32", "bfloat16"]
    assert "0.375 s/step in float32, 0.221 in bfloat16 (1.70x)" in reason
    assert "measured now" in reason
    cached = json.loads((tmp_path / CACHE_FILE).read_text())
    (entry,) = cached.values()
    assert entry["precision"] == "bfloat16"
    assert entry["seconds"] == {"float32": 0.375, "bfloat16": 0.221}
    # The same machine and model shape: no timing again.
    again = resolve_precision("auto", CONFIG, 18, timer=_never, cache_dir=tmp_path,
                              gpu_bf16=False)
    assert again[0] == "bfloat16" and "cached in" in again[1]
    # refresh times again (and may change its mind).
    slower = FakeTimer(0.301, 0.405)
    assert resolve_precision("auto", CONFIG, 18, timer=slower, cache_dir=tmp_path,
                             gpu_bf16=False, refresh=True)[0] == "float32"
    assert slower.calls == ["float32", "bfloat16"]


def test_another_model_shape_is_timed_on_its_own(tmp_path: Path) -> None:
    first, second, third = FakeTimer(1, 0.5), FakeTimer(0.5, 1), FakeTimer(0.5, 1)
    assert resolve_precision("auto", CONFIG, 18, timer=first, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "bfloat16"
    wide = resolve_config("seed", overrides={"model": {"conv_channels": [64, 96, 144, 216]}})
    assert resolve_precision("auto", wide, 18, timer=second, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "float32"
    bigger_batch = resolve_config("seed", overrides={"train": {"batch_size": 256}})
    resolve_precision("auto", bigger_batch, 18, timer=third, cache_dir=tmp_path, gpu_bf16=False)
    assert len(third.calls) == 2
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 3
    # The first shape is still cached as it was.
    assert resolve_precision("auto", CONFIG, 18, timer=_never, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "bfloat16"


def test_another_machine_is_timed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_precision("auto", CONFIG, 18, timer=FakeTimer(1, 0.5), cache_dir=tmp_path,
                      gpu_bf16=False)
    monkeypatch.setattr(precision_module, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum")
    timer = FakeTimer(0.3, 0.4)
    assert resolve_precision("auto", CONFIG, 18, timer=timer, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "float32"
    assert len(timer.calls) == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", json.dumps({"x": 1})])
def test_an_unreadable_cache_is_timed_again_and_rewritten(tmp_path: Path, content: str) -> None:
    (tmp_path / CACHE_FILE).write_text(content)
    timer = FakeTimer(1, 0.5)
    assert resolve_precision("auto", CONFIG, 18, timer=timer, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "bfloat16"
    assert len(timer.calls) == 2
    assert isinstance(json.loads((tmp_path / CACHE_FILE).read_text()), dict)


def test_a_malformed_entry_is_timed_again(tmp_path: Path) -> None:
    resolve_precision("auto", CONFIG, 18, timer=FakeTimer(1, 0.5), cache_dir=tmp_path,
                      gpu_bf16=False)
    path = tmp_path / CACHE_FILE
    cache = json.loads(path.read_text())
    for entry in cache.values():
        entry["seconds"]["bfloat16"] = -1
    path.write_text(json.dumps(cache))
    timer = FakeTimer(0.5, 1)
    assert resolve_precision("auto", CONFIG, 18, timer=timer, cache_dir=tmp_path,
                             gpu_bf16=False)[0] == "float32"
    assert len(timer.calls) == 2


def test_explicit_precisions_gpus_and_bad_values_need_no_timing(tmp_path: Path) -> None:
    for choice in ("float32", "bfloat16"):
        assert resolve_precision(choice, timer=_never, cache_dir=tmp_path) == (
            choice, "requested")
    assert resolve_precision("auto", CONFIG, 18, timer=_never, cache_dir=tmp_path,
                             gpu_bf16=True) == ("bfloat16", "auto: GPU with bfloat16 support")
    with pytest.raises(ValueError, match="precision must be auto, float32 or bfloat16"):
        resolve_precision("float16", gpu_bf16=False)
    with pytest.raises(ValueError, match="give its config and number of classes"):
        resolve_precision("auto", gpu_bf16=False)
    assert not (tmp_path / CACHE_FILE).exists()


def test_auto_times_a_real_tiny_model_in_both_precisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default timer on a real (tiny) network, through ``auto``: each precision timed
    twice, each timing in a new process, in alternating order (one told to stop early at twice
    the other's best time), finite seconds, the faster one chosen and cached. (The demo test
    fakes this timing: it cost 31 s there.)"""
    config = tiny_config(steps=1, eval_every=1)
    real = precision_module.time_in_new_process
    calls: list[tuple[str, float | None, float]] = []

    def spy(config, num_classes: int, precision: str, stop_above: float | None = None) -> float:
        calls.append((precision, stop_above, real(config, num_classes, precision, stop_above)))
        return calls[-1][2]

    monkeypatch.setattr(precision_module, "time_in_new_process", spy)
    choice, reason = resolve_precision("auto", config, 4, cache_dir=tmp_path, gpu_bf16=False)
    (entry,) = json.loads((tmp_path / CACHE_FILE).read_text()).values()
    seconds = entry["seconds"]
    assert all(0 < seconds[p] < 60 for p in ("float32", "bfloat16"))
    assert [c[0] for c in calls] == ["float32", "bfloat16", "bfloat16", "float32"]
    f32, bf16 = calls[0][2], calls[1][2]
    assert calls[0][1] is None and calls[1][1] == 2 * f32 and calls[2][1] == 2 * f32
    assert calls[3][1] == 2 * min(bf16, calls[2][2])
    assert seconds == {"float32": min(f32, calls[3][2]), "bfloat16": min(bf16, calls[2][2])}
    assert choice == entry["precision"] == faster_precision(seconds)
    assert "measured now" in reason


def test_a_run_records_its_precision_and_keeps_it_when_resumed(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    timer = FakeTimer(0.5, 1.0)  # "float32 is twice as fast here"
    monkeypatch.setattr(precision_module, "time_in_new_process",
                        lambda config, classes, precision, limit=None: timer(precision))
    monkeypatch.setattr(precision_module, "gpu_supports_bfloat16", lambda: False)
    config = tiny_config(steps=2, eval_every=2, precision="auto", sparsity_every=0)
    out = tmp_path / "run"
    trainer = Trainer(tiny_dataset, config, out, [0], log=lambda _: None)
    assert trainer.precision == "float32" and len(timer.calls) == 4  # 2 rounds of 2
    trainer.run()
    assert runs.read_run_info(out)["precision"] == "float32"
    # The cache is emptied and the machine now times bfloat16 faster: the run still resumes
    # in the precision it began with, without timing anything.
    for path in default_cache_dir().glob(CACHE_FILE):
        path.unlink()
    timer.seconds = {"float32": 1.0, "bfloat16": 0.1}
    lines: list[str] = []
    assert Trainer(tiny_dataset, config, out, [0], log=lines.append).precision == "float32"
    assert len(timer.calls) == 4
    assert any("recorded by this run" in line for line in lines)
    # A new folder times again and follows the machine.
    assert Trainer(tiny_dataset, config, tmp_path / "new", [0],
                   log=lambda _: None).precision == "bfloat16"
