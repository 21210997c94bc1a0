"""Training runs: 2016 shards train, resume reproduces, NaN aborts, folders are checked."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_config

from facefold.data.pipeline import decode_shards, evaluation_batches
from facefold.runs import latest_checkpoint, read_metrics
from facefold.train import train
from facefold.train import trainer as trainer_module
from facefold.train.optim import swap_average
from facefold.train.trainer import NaNLossError, eval_steps


def test_eval_steps_include_zero_and_the_last_step() -> None:
    assert eval_steps(100, 30) == [0, 30, 60, 90, 100]
    assert eval_steps(90, 30) == [0, 30, 60, 90]


def test_a_2016_shard_trains_and_writes_a_complete_run(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rows = train(tiny_dataset, tiny_config(steps=40, eval_every=20), run, [0], log=lambda _: None)
    assert [r["step"] for r in rows] == [0, 20, 40]
    assert rows[0]["eval_images"] == 32  # shard 0 holds 4 people x 8
    assert rows[-1]["eval_accuracy"] >= 0.75  # chance is 0.25
    assert read_metrics(run) == rows
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "step-000000.keras", "step-000020.keras", "step-000040.keras"
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 40
    assert (run / "labels.txt").read_text().splitlines()[0] == "person_0"
    predictions = np.load(run / "predictions.npz")
    np.testing.assert_allclose(predictions["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    accuracy = (predictions["probabilities"].argmax(1) == predictions["labels"]).mean()
    assert accuracy == pytest.approx(rows[-1]["eval_accuracy"])
    assert any((run / "tensorboard" / "eval").iterdir())


# modern: batch norm, dropout, AdamW, warm-up + cosine, weight average, TTA and the box and
# erasing augmentation must all resume exactly (the warm-up is shortened to fit the run).
@pytest.mark.slow
@pytest.mark.parametrize(("preset", "changes"), [("seed", {}), ("modern", {"warmup_steps": 5})])
def test_resume_after_interruption_matches_an_uninterrupted_run(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str,
    changes: dict,
) -> None:
    config = tiny_config(steps=30, eval_every=10, preset=preset, **changes)
    whole = train(tiny_dataset, config, tmp_path / "whole", [1], log=lambda _: None)

    calls = {"n": 0}
    original = trainer_module.Trainer._log_progress

    def interrupt_after_second_eval(self, row, seconds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed right after the step-20 checkpoint
        original(self, row, seconds)

    monkeypatch.setattr(trainer_module.Trainer, "_log_progress", interrupt_after_second_eval)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, config, tmp_path / "resumed", [1], log=lambda _: None)
    assert latest_checkpoint(tmp_path / "resumed")[0] == 20
    with warnings.catch_warnings():  # a run killed before step 10 resumes from step 0 silently
        warnings.filterwarnings("error", message="Skipping variable loading")
        keras.models.load_model(tmp_path / "resumed" / "checkpoints" / "step-000000.keras")
    monkeypatch.setattr(trainer_module.Trainer, "_log_progress", original)

    resumed = train(tiny_dataset, config, tmp_path / "resumed", [1], log=lambda _: None)
    keys = ("step", "eval_accuracy", "eval_loss", "train_loss", "train_accuracy")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]


def test_weight_average_is_what_evaluation_and_checkpoints_use(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    config = tiny_config(steps=20, eval_every=20, preset="modern", warmup_steps=2,
                         ema_decay=0.9, sparsity_every=0)
    rows = train(tiny_dataset, config, tmp_path / "run", [0], log=lambda _: None)
    model = keras.models.load_model(latest_checkpoint(tmp_path / "run")[1])
    # A checkpoint holds the average in the model and the raw weights in the average slots.
    averaged = [w.numpy().copy() for w in model.trainable_variables]
    raw = [a.numpy().copy() for a in model.optimizer.averages]
    assert any(not np.allclose(a, r, atol=1e-6) for a, r in zip(averaged, raw, strict=True))
    batches = evaluation_batches(decode_shards(tiny_dataset)[0], 32, 256)
    loss, accuracy = model.evaluate(batches, verbose=0)
    assert (loss, accuracy) == pytest.approx((rows[-1]["eval_loss"], rows[-1]["eval_accuracy"]),
                                             rel=1e-5)
    swap_average(model)  # the raw weights, as the optimizer trains them
    for weight, value in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)
    assert model.evaluate(batches, verbose=0)[0] != pytest.approx(loss, rel=1e-4)


def test_nan_loss_aborts_with_a_clear_message(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(steps=30, eval_every=30, learning_rate=1e30)
    with pytest.raises(NaNLossError, match=r"training loss became .* at step"):
        train(tiny_dataset, config, tmp_path / "run", [0], log=lambda _: None)


def test_a_different_run_in_the_same_folder_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    train(tiny_dataset, tiny_config(steps=2, eval_every=2), tmp_path / "run", [0],
          log=lambda _: None)
    with pytest.raises(ValueError, match=r"holds a run of other data or settings \(the config "
                       r"\(train.steps 2 against 4\)\)"):
        train(tiny_dataset, tiny_config(steps=4, eval_every=2), tmp_path / "run", [0],
              log=lambda _: None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a facefold run folder"):
        train(tiny_dataset, tiny_config(steps=2, eval_every=2), tmp_path / "other", [0],
              log=lambda _: None)


@pytest.mark.parametrize(("shards", "message"), [([5], "out of range"), ([], "is empty"),
                                                  ([0, 1, 2], "nothing left to train on")])
def test_bad_eval_shards(tiny_dataset: Path, tmp_path: Path, shards: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(tiny_dataset, tiny_config(), tmp_path / "run", shards, log=lambda _: None)
