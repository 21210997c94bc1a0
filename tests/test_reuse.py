"""Running a finished cross-validation or experiment again reuses every run and writes
nothing, for the presets whose identity the family extends: a weighted ensemble (its weighing
rule), a distilled model (its teachers) and a plain ensemble; and such a preset is found as a
baseline (:func:`facefold.evaluate.experiment.finished_cases`).

Tiny runs (32x32 crops, 2 steps) on the 3-shard tiny dataset, dlib128 replaced by
:class:`conftest.FakeEmbedder`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import FakeEmbedder, make_tiny_dataset, tiny_config

from facefold import runs
from facefold.evaluate.cv import run_cv
from facefold.evaluate.experiment import compare_presets, finished_cases, run_experiment

QUIET = lambda _: None  # noqa: E731
# What the log says when a run trains its last step, and when an ensemble chooses its weights.
TRAINED, CHOSEN = "step 2/2", "chosen on inner shard"
COMPOSITE = ["ensemble-weighted", "fast-64-distilled", "ensemble"]
# Every preset of the experiment: the composites and the runs they are made of, so that each
# member or teacher is the experiment's own run.
PRESETS = ["fast", "dlib128", "fast-64-long", "fast-64-wide", *COMPOSITE]
OVERRIDES = {"model": {"crop_size": 32, "input_size": 32},
             "train": {"steps": 2, "eval_every": 2, "batch_size": 16, "precision": "float32",
                       "sparsity_every": 0}}


def file_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("reuse") / "data")


@pytest.mark.parametrize("preset", COMPOSITE)
@pytest.mark.usefixtures("module_fake_embedder")
def test_a_second_cv_writes_nothing(preset: str, data: Path, tmp_path: Path) -> None:
    config = tiny_config(2, 2, preset, sparsity_every=0)
    out = tmp_path / "cv"
    run_cv(data, config, out, "0", log=QUIET)
    before = file_hashes(out)
    logged: list[str] = []
    run_cv(data, config, out, "0", log=logged.append)
    assert file_hashes(out) == before
    assert not any(TRAINED in line or CHOSEN in line for line in logged), logged


@pytest.fixture(scope="module")
def experiment(module_fake_embedder: FakeEmbedder, data: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiment") / "out"
    run_experiment(data, PRESETS, out, "0", OVERRIDES, baseline="fast", log=QUIET)
    return out


@pytest.mark.slow
def test_a_second_experiment_writes_nothing(experiment: Path, data: Path) -> None:
    before = file_hashes(experiment)
    logged: list[str] = []
    run_experiment(data, PRESETS, experiment, "0", OVERRIDES, baseline="fast",
                   log=logged.append)
    assert file_hashes(experiment) == before
    assert not any(TRAINED in line or CHOSEN in line for line in logged), logged


@pytest.mark.parametrize("baseline", COMPOSITE)
def test_a_composite_baseline_has_its_finished_cases(experiment: Path, baseline: str) -> None:
    assert finished_cases(runs.preset_dir(experiment, baseline)).cases == [0]
    result = compare_presets(experiment, ["fast"], baseline)
    assert [s.preset for s in result.summaries] == [baseline, "fast"]
