"""The benchmark: analytic FLOP counts against hand counts, a tiny timed run, precision choice."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from facefold.bench import (
    count_training_flops,
    format_bench,
    format_profile,
    plain_keras_model,
    profile_training,
    run_bench,
    spread,
)
from facefold.bench.profiler import _step_part
from facefold.bench.training import round_order
from facefold.bench.workload import batches_in_memory
from facefold.cli import main
from facefold.config import ModelSpec
from facefold.machine import cpu_model
from facefold.models.cnn import build_model
from facefold.models.presets import get_preset
from facefold.train.precision import probe_batches

SEED = get_preset("seed").model


def _seed_forward_by_hand(classes: int) -> int:
    """Forward FLOPs per image of the seed model, written out layer by layer."""
    conv = (
        2 * 9 * 3 * 32 * 96 * 96  # conv1 at 96x96: 15,925,248
        + 2 * 9 * 32 * 48 * 48 * 48  # conv2 at 48x48: 63,700,992
        + 2 * 9 * 48 * 72 * 24 * 24  # conv3 at 24x24: 35,831,808
        + 2 * 9 * 72 * 108 * 12 * 12  # conv4 at 12x12: 20,155,392
    )
    dense = 2 * 3888 * 1024 + 2 * 1024 * 256 + 2 * 256 * classes  # 3888 = 6*6*108
    return conv + dense


@pytest.mark.parametrize("classes", [18, 40])
def test_seed_flops_equal_the_hand_count(classes: int) -> None:
    flops = count_training_flops(SEED, classes, 128)
    assert flops["forward_per_image"] == _seed_forward_by_hand(classes)
    assert flops["train_step"] == 3 * 128 * _seed_forward_by_hand(classes)
    assert flops["per_layer_forward"]["conv2"] == 63_700_992
    assert flops["per_layer_forward"]["fc1"] == 7_962_624
    # The "about 55 GFLOP per training step" at batch 128.
    assert flops["train_step"] == pytest.approx(55.34e9, rel=1e-3)


def test_seed_flops_at_40_classes_exactly() -> None:
    assert count_training_flops(SEED, 40, 128)["train_step"] == 55_342_399_488


def test_modern_flops_by_hand_are_about_the_seeds() -> None:
    """Stem conv1a; residual stages 2-4 (conv a, conv b, 1x1 projection); global pooling leaves
    96 features for the logits. Batch norm, additions and pooling are not counted."""
    layers = count_training_flops(get_preset("modern").model, 18, 1)["per_layer_forward"]
    by_hand = {
        "conv1a": 2 * 9 * 3 * 16 * 96 * 96,  # 7,962,624
        "conv2a": 2 * 9 * 16 * 32 * 48 * 48,  # 21,233,664
        "conv2b": 2 * 9 * 32 * 32 * 48 * 48,  # 42,467,328
        "conv2_shortcut": 2 * 16 * 32 * 48 * 48,  # 2,359,296
        "conv3a": 2 * 9 * 32 * 48 * 24 * 24,  # 15,925,248
        "conv3b": 2 * 9 * 48 * 48 * 24 * 24,  # 23,887,872
        "conv3_shortcut": 2 * 32 * 48 * 24 * 24,  # 1,769,472
        "conv4a": 2 * 9 * 48 * 96 * 12 * 12,  # 11,943,936
        "conv4b": 2 * 9 * 96 * 96 * 12 * 12,  # 23,887,872
        "conv4_shortcut": 2 * 48 * 96 * 12 * 12,  # 1,327,104
        "logits": 2 * 96 * 18,  # 3,456
    }
    assert layers == by_hand
    assert sum(by_hand.values()) == 152_767_872
    step = count_training_flops(get_preset("modern").model, 18, 128)["train_step"]
    assert step == 3 * 128 * 152_767_872  # 58.7 GFLOP, seed 55.3: the same cost per step
    assert count_training_flops(get_preset("fast").model, 18, 128)["train_step"] == step
    # No residual blocks: one conv per stage, the stage names of the 2016 model plus "a".
    plain = count_training_flops(get_preset("fast-nores").model, 18, 1)["per_layer_forward"]
    assert plain["conv4a"] == by_hand["conv4a"] and "conv4b" not in plain


def test_flops_scale_linearly_with_batch() -> None:
    one = count_training_flops(SEED, 40, 1)
    assert one["train_step"] == 3 * one["forward_per_image"]
    for batch in (2, 7, 128, 256):
        flops = count_training_flops(SEED, 40, batch)
        assert flops["train_step"] == batch * one["train_step"]
        assert flops["per_layer_forward"] == one["per_layer_forward"]


def test_size32_convs_cost_a_ninth_and_fc1_shrinks() -> None:
    seed = count_training_flops(SEED, 40, 1)["per_layer_forward"]
    small = count_training_flops(get_preset("size32").model, 40, 1)["per_layer_forward"]
    assert small["conv1"] == 2 * 9 * 3 * 32 * 32 * 32
    assert small["conv4"] == 2 * 9 * 72 * 108 * 4 * 4
    for name in ("conv1", "conv2", "conv3", "conv4"):  # 96,48,24,12 -> 32,16,8,4
        assert small[name] * 9 == seed[name]
    assert small["fc1"] == 2 * (2 * 2 * 108) * 1024
    assert (small["fc2"], small["logits"]) == (seed["fc2"], seed["logits"])


def test_reduced_preset_by_hand() -> None:
    layers = count_training_flops(get_preset("reduced").model, 21, 1)["per_layer_forward"]
    assert layers == {
        "conv1": 2 * 9 * 3 * 32 * 96 * 96,
        "conv2": 2 * 9 * 32 * 48 * 48 * 48,
        "conv3": 2 * 9 * 48 * 72 * 24 * 24,
        "conv4": 2 * 9 * 72 * 72 * 12 * 12,
        "fc1": 2 * (6 * 6 * 72) * 96,
        "fc2": 2 * 96 * 128,
        "logits": 2 * 128 * 21,
    }


def test_odd_sizes_pool_with_ceiling() -> None:
    """SAME max-pooling with stride 2 rounds up: 80 -> 40 -> 20 -> 10 -> 5, 45 -> 23."""
    layers = count_training_flops(ModelSpec(input_size=80), 2, 1)["per_layer_forward"]
    assert layers["fc1"] == 2 * (5 * 5 * 108) * 1024
    layers = count_training_flops(ModelSpec(conv_channels=(8,), input_size=45), 2, 1)
    assert layers["per_layer_forward"]["fc1"] == 2 * (23 * 23 * 8) * 1024


@pytest.mark.parametrize(("classes", "batch"), [(1, 8), (10, 0)])
def test_flops_reject_bad_arguments(classes: int, batch: int) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        count_training_flops(SEED, classes, batch)


@pytest.fixture(scope="module")
def tiny_bench() -> dict:
    """One tiny benchmark run (seed net on 96 crops resized to 32, batch 8, float32, with the
    plain Keras peer), shared by tests."""
    return run_bench("size32", "float32", batch=8, steps=3, warmup=1, latency_calls=20,
                     log=lambda _: None, matmul_size=256)


def test_tiny_bench_gives_positive_finite_numbers(tiny_bench: dict) -> None:
    measured = tiny_bench["measured"]
    assert list(measured) == ["float32", "plain Keras float32"]
    own, peer = measured["float32"], measured["plain Keras float32"]
    assert set(own) == {"compute", "pipeline", "of_ceiling", "pipeline_over_compute",
                        "eval_images_per_s", "latency_median_ms", "latency_p95_ms", "pids",
                        "two_modes"}
    # the peer is timed for training only
    assert set(peer) == {"compute", "of_ceiling", "pids", "two_modes"}
    flops = tiny_bench["flops"]["train_step"]
    for row in (own, peer):
        for kind in ("compute", *(["pipeline"] if "pipeline" in row else [])):
            rates, seconds = row[kind], row[kind]["seconds_per_step"]
            assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]
            assert rates["images_per_s"] == pytest.approx(8 / seconds["min"])
            assert rates["gflops_per_s"] == pytest.approx(flops / seconds["min"] / 1e9)
        assert row["of_ceiling"] == pytest.approx(
            row["compute"]["gflops_per_s"] / tiny_bench["ceiling"]["float32"])
    assert own["pipeline_over_compute"] == pytest.approx(
        own["pipeline"]["images_per_s"] / own["compute"]["images_per_s"])
    assert own["latency_p95_ms"] >= own["latency_median_ms"] > 0
    assert math.isfinite(own["eval_images_per_s"]) and own["eval_images_per_s"] > 0
    assert tiny_bench["ceiling"]["float32"] > 0 and tiny_bench["peak_memory_mb"] > 0


def test_tiny_bench_settings_flops_and_table(tiny_bench: dict) -> None:
    settings = tiny_bench["settings"]
    assert (settings["input_size"], settings["crop_size"], settings["batch"]) == (32, 96, 8)
    assert settings["num_classes"] == 10 and settings["images"] >= 16
    assert tiny_bench["flops"] == count_training_flops(get_preset("size32").model, 10, 8)
    assert tiny_bench["auto"] is None  # float32 was asked for: auto was not timed
    table = format_bench(tiny_bench)
    for text in ("machine:", "precision auto: not asked", "plain Keras float32", "GFLOP/s", "ms",
                 "achieved / ceiling", "best (median, max)", "MB"):
        assert text in table


def test_tiny_bench_times_each_model_in_a_new_process_per_round(tiny_bench: dict) -> None:
    """Two rounds: facefold first, then the peer first; four processes, none of them this
    one; each model's spread and mode flag come from its own two processes."""
    order = tiny_bench["order"]
    assert [(r, name) for r, name, _ in order] == [
        (1, "float32"), (1, "plain Keras float32"), (2, "plain Keras float32"), (2, "float32")]
    pids = [pid for _, _, pid in order]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    for name, row in tiny_bench["measured"].items():
        assert row["pids"] == [pid for _, n, pid in order if n == name]
        seconds = row["compute"]["seconds_per_step"]
        assert row["two_modes"] == (seconds["max"] >= 1.7 * seconds["min"])
    assert "slowest / fastest process" in format_bench(tiny_bench)


def test_round_order_alternates_facefold_and_its_peer() -> None:
    names = ["float32", "bfloat16", "plain Keras float32", "plain Keras bfloat16"]
    assert round_order(names, 1) == ["float32", "plain Keras float32", "bfloat16",
                                     "plain Keras bfloat16"]
    assert round_order(names, 2) == ["plain Keras float32", "float32", "plain Keras bfloat16",
                                     "bfloat16"]
    assert round_order(["bfloat16"], 2) == ["bfloat16"]  # --no-peer


def test_batches_in_memory_repeat_the_batches_without_tf_data_autotuning() -> None:
    """The 2x mode of the bench's compute-only timings: a fit over a dataset with tf.data's
    autotuning sometimes ended only when its thread next woke (docs/performance.md)."""
    import tensorflow as tf

    def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        value = tf.cast(step, tf.float32)
        return tf.fill((2, 3, 3, 1), value), tf.fill((2,), tf.cast(step, tf.int32) * 10)

    batches = batches_in_memory(make_batch, count=3)
    assert batches.options().autotune.enabled is False
    assert tf.data.Dataset.range(3).options().autotune.enabled is not False  # TF's default
    seen = [(float(x[0, 0, 0, 0]), int(y[1])) for x, y in batches.take(7)]
    assert seen == [(0.0, 0), (1.0, 10), (2.0, 20), (0.0, 0), (1.0, 10), (2.0, 20), (0.0, 0)]


def test_every_pipeline_dataset_runs_without_tf_data_autotuning() -> None:
    # Training's batches (and bench's pipeline row, which times them), an embedding head's,
    # and evaluation's: a fit or evaluate over them must not wait for the autotuning thread.
    import numpy as np
    import tensorflow as tf

    from facefold.data.pipeline import (
        Split,
        embedding_evaluation_batches,
        evaluation_batches,
        step_batches,
    )

    def make_batch(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.fill((2, 3, 3, 1), tf.cast(step, tf.float32)), tf.fill((2,), step)

    batches = step_batches(make_batch, 3, 6)
    assert batches.options().autotune.enabled is False
    assert [int(y[0]) for _, y in batches] == [3, 4, 5]
    images = Split(np.zeros((5, 8, 8, 3), np.uint8), np.arange(5, dtype=np.int64))
    crops = evaluation_batches(images, 6, 2)
    assert crops.options().autotune.enabled is False
    assert [tuple(x.shape) for x, _ in crops] == [(2, 6, 6, 3), (2, 6, 6, 3), (1, 6, 6, 3)]
    views = Split(np.zeros((3, 2, 4), np.float32), np.arange(3, dtype=np.int64))
    assert embedding_evaluation_batches(views, 1, 2).options().autotune.enabled is False


def test_precision_probe_batches_repeat_without_tf_data_autotuning() -> None:
    import numpy as np

    x = np.arange(6, dtype=np.float32).reshape(6, 1)
    y = np.arange(6, dtype=np.int32)
    batches = probe_batches(x, y, 4)
    assert batches.options().autotune.enabled is False
    assert [list(b[1].numpy()) for b in batches.take(3)] == [[0, 1, 2, 3], [4, 5], [0, 1, 2, 3]]


def test_spread_is_min_median_max() -> None:
    assert spread([0.30, 0.25, 0.41, 0.27]) == pytest.approx(
        {"min": 0.25, "median": 0.285, "max": 0.41})
    assert spread([0.5]) == {"min": 0.5, "median": 0.5, "max": 0.5}


def test_plain_keras_peer_has_the_seed_models_parameters() -> None:
    """The peer and facefold's model are the same network: the same parameter count, counted
    by hand for the seed at 40 classes."""
    by_hand = (3 * 3 * 3 * 32 + 32) + (3 * 3 * 32 * 48 + 48) + (3 * 3 * 48 * 72 + 72) + (
        3 * 3 * 72 * 108 + 108) + (3888 * 1024 + 1024) + (1024 * 256 + 256) + (256 * 40 + 40)
    assert plain_keras_model(SEED, 40, "float32").count_params() == by_hand
    assert build_model(SEED, 40).count_params() == by_hand
    with pytest.raises(ValueError, match="plain Keras peer is the 2016 architecture"):
        plain_keras_model(get_preset("modern").model, 40, "float32")


def test_bench_refuses_images_smaller_than_the_crop(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match="smaller than the model's 96px crop"):
        run_bench("seed", "float32", batch=8, steps=1, warmup=1, data_dir=tiny_dataset,
                  log=lambda _: None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--timed-steps", "0"], "steps, warmup, latency_calls and rounds must be >= 1"),
        (["bench", "--rounds", "0"], "steps, warmup, latency_calls and rounds must be >= 1"),
        (["bench", "--input-size", "200"], "model.input_size must be between 8 and crop_size"),
        (["bench", "--preset", "huge"], "unknown preset 'huge'"),
    ],
)
def test_cli_bench_errors_are_one_line(
    capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("facefold: error:") and message in err


def test_cpu_model_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: avx2\n")
    assert cpu_model(info) == "AMD EPYC 9R14"
    assert cpu_model(tmp_path / "missing") == "unknown CPU"


@pytest.mark.parametrize(("scope", "op_type", "part"), [
    ("StatefulPartitionedCall/adam/Sub_23", "Sub", "optimizer and weight average"),
    ("StatefulPartitionedCall/cnn_1/conv1_1/convolution", "Conv2D", "forward and loss"),
    ("StatefulPartitionedCall/gradient_tape/cnn_1/conv2_1/convolution", "Conv2DBackpropFilter",
     "backward"),
    ("StatefulPartitionedCall/gradient_tape/cnn_1/pool1_1/MaxPool", "MaxPoolGrad", "backward"),
    ("IteratorGetNext", "IteratorGetNext", "input"),
])
def test_ops_are_sorted_into_parts_of_the_step(scope: str, op_type: str, part: str) -> None:
    assert _step_part(scope, op_type) == part


def test_a_profiled_step_is_broken_down_by_op() -> None:
    """A real profiler trace of a tiny model: the convolutions and their gradients are found,
    every time is positive, and the parts add up to the op types' total."""
    result = profile_training("size32", "float32", steps=2, warmup=1, batch=8,
                              log=lambda _: None)
    by_type, by_part = result["by_type"], result["by_part"]
    assert any(op.endswith("Conv2D") for op in by_type)
    assert any("Conv2DBackpropFilter" in op for op in by_type)
    assert {"forward and loss", "backward", "optimizer and weight average"} <= set(by_part)
    assert all(seconds > 0 for seconds in [*by_type.values(), *by_part.values()])
    assert sum(by_part.values()) == pytest.approx(sum(by_type.values()))
    assert result["op_share_of_wall"] == pytest.approx(
        sum(by_type.values()) / result["wall_seconds_per_step"])
    assert "by op type" in format_profile(result)


def test_startup_runs_are_told_apart_by_exit_status() -> None:
    from facefold.bench.startup import format_bench_startup, run_outcome

    # verify's 1 is its answer; identify's 1 a picture without a face; anything else a crash.
    assert [run_outcome("verify", s) for s in (0, 1, 2)] == ["answered", "answered", "failed"]
    assert [run_outcome("identify 10", s) for s in (0, 1, 2)] == [
        "answered", "refused", "failed"]
    assert [run_outcome("predict", s) for s in (0, 1)] == ["answered", "failed"]
    entry = {"seconds": [0.7, 0.8, 0.9], "median": 0.8, "min": 0.7, "max": 0.9,
             "answered": 1, "refused": 2, "failed": 0, "trace": {}}
    text = format_bench_startup({
        "machine": {"cpu": "test CPU", "cores": 2, "python": "3.11"},
        "load_before": (1, 1, 1), "load_after": (1, 1, 1), "runs": 3, "model": "m",
        "commands": {"identify 10": entry}})
    row = next(line for line in text.splitlines() if line.startswith("identify 10"))
    assert row.endswith("2 of 3 refused a picture (no face: a row with its error, exit status 1)")
    assert "FAILED" not in row
