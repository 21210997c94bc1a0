"""Executors: Ray gives the accuracies the local executor gives, resumes, and fails clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import tiny_config

from facefold.evaluate.cv import cv_trials, prepare_cv_dir
from facefold.evaluate.executor import Executor, TrialsFailed, is_complete, run_trials
from facefold.runs import read_metrics

TINY_OVERRIDES = {"model": {"crop_size": 32, "input_size": 32}}


def _grid(out: Path) -> list:
    """2 presets x 2 folds of tiny trials, without sparsity logging: it took a third of each
    trial, test_analysis checks it, and a trial's files come back from Ray all alike."""
    trials = []
    for name in ("seed", "reduced"):
        widths = [32, 48, 72, 108] if name == "seed" else [32, 48, 72, 72]
        config = tiny_config(steps=12, eval_every=6, sparsity_every=0).replace(
            model={"conv_channels": widths})
        trials += cv_trials(config, out / name, [0, 2], name)
    return trials


def _accuracies(trials: list) -> dict[str, list[float]]:
    return {t.name: [r["eval_accuracy"] for r in read_metrics(t.out)] for t in trials}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_same_accuracies_as_local(tiny_dataset: Path, tmp_path: Path, ray_session):
    local = _grid(tmp_path / "local")
    run_trials(tiny_dataset, local, Executor("local"), log=lambda _: None)
    remote = _grid(tmp_path / "ray")
    outcomes = run_trials(tiny_dataset, remote, Executor("ray"), log=lambda _: None)
    assert all(o.rows for o in outcomes)
    expected = _accuracies(local)
    got = _accuracies(remote)
    assert list(got.values()) == list(expected.values())
    # The driver holds the same files as a local run, pointing at the driver's dataset.
    for trial in remote:
        assert is_complete(trial, tiny_dataset)
        assert (trial.out / "checkpoints" / "step-000012.keras").is_file()
        assert str(tiny_dataset.resolve()) in (trial.out / "run.json").read_text()
    # Re-running skips complete trials, and re-runs only a missing one.
    shutil.rmtree(remote[1].out)
    outcomes = run_trials(tiny_dataset, remote, Executor("ray"), log=lambda _: None)
    assert [o.skipped for o in outcomes] == [True, False, True, True]
    assert _accuracies(remote) == got


def _losses(trials: list) -> list[list[float]]:
    """Every loss a trial logged: its weights' fingerprint, far finer than its accuracies."""
    return [[r[k] for r in read_metrics(t.out) for k in sorted(r) if k.endswith("loss")]
            for t in trials]


@pytest.mark.slow
def test_ray_computes_what_local_computes_whatever_its_cpu_request(
        tiny_dataset: Path, tmp_path: Path, ray_session, monkeypatch):
    """A trial asking Ray for 1 CPU still computes with the driver's thread count: the same
    losses to the last bit. At this size the thread count changes them (checked here by
    running the trial on Ray with 1 thread), so the equality is no accident of size."""
    from facefold.evaluate import executor as executor_module
    from facefold.machine import tf_threads

    if tf_threads() < 2:
        pytest.skip("needs 2 TensorFlow threads to differ from 1")
    config = tiny_config(steps=20, eval_every=10, sparsity_every=0)
    local = cv_trials(config, tmp_path / "local", [1], "seed")
    run_trials(tiny_dataset, local, Executor("local"), log=lambda _: None)
    remote = cv_trials(config, tmp_path / "ray", [1], "seed")
    run_trials(tiny_dataset, remote, Executor("ray", cpus_per_trial=1), log=lambda _: None)
    assert _losses(remote) == _losses(local)

    monkeypatch.setattr(executor_module, "tf_threads", lambda: 1)
    one_thread = cv_trials(config, tmp_path / "ray-1", [1], "seed")
    run_trials(tiny_dataset, one_thread, Executor("ray", cpus_per_trial=1), log=lambda _: None)
    assert _losses(one_thread) != _losses(local)


def test_a_worker_without_tensorflow_is_reported(tiny_dataset: Path, tmp_path: Path, ray_session):
    fake = tmp_path / "fake_site"
    (fake / "tensorflow").mkdir(parents=True)
    (fake / "tensorflow" / "__init__.py").write_text("raise ImportError('no TensorFlow here')\n")
    trials = cv_trials(tiny_config(steps=2, eval_every=2), tmp_path / "cv", [0])
    # A worker whose Python path shadows TensorFlow, as on a node where it is not installed.
    remote = ray_session.remote(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": str(fake)}})
    from facefold.evaluate import executor as executor_module

    def fake_remote(**options):
        return lambda fn: remote(fn)

    original = ray_session.remote
    ray_session.remote = fake_remote
    try:
        with pytest.raises(TrialsFailed, match="cannot import TensorFlow/facefold"):
            executor_module.run_trials(tiny_dataset, trials, Executor("ray"), log=lambda _: None)
    finally:
        ray_session.remote = original
    assert not (tmp_path / "cv" / "case-0" / "metrics.jsonl").exists()


def test_gpu_request_without_gpu_is_refused(tiny_dataset: Path, tmp_path: Path, ray_session):
    trials = cv_trials(tiny_config(), tmp_path / "cv", [0])
    with pytest.raises(ValueError, match=r"asks for 1 GPU\(s\) but the Ray cluster has 0"):
        run_trials(tiny_dataset, trials, Executor("ray", gpus_per_trial=1), log=lambda _: None)
    assert not (tmp_path / "cv").exists()


def test_unreachable_address_is_a_clear_error(tiny_dataset: Path, tmp_path: Path):
    pytest.importorskip("ray")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    trials = cv_trials(tiny_config(), tmp_path / "cv", [0])
    with pytest.raises(ValueError, match=r"cannot start or reach Ray at 127\.0\.0\.1:1"):
        run_trials(tiny_dataset, trials, Executor("ray", address="127.0.0.1:1"),
                   log=lambda _: None)


def test_a_failing_trial_does_not_stop_the_others(tiny_dataset: Path, tmp_path: Path):
    good = tiny_config(steps=4, eval_every=2)
    bad = tiny_config(steps=4, eval_every=2, learning_rate=1e30)  # loss becomes NaN
    prepare_cv_dir(tiny_dataset, good, tmp_path / "good", [0])
    trials = cv_trials(bad, tmp_path / "bad", [0], "bad") + cv_trials(good, tmp_path / "good",
                                                                      [0], "good")
    with pytest.raises(TrialsFailed, match=r"1 of 2 trials failed(.|\n)*bad/case-0: NaNLossError"):
        run_trials(tiny_dataset, trials, log=lambda _: None)
    assert is_complete(trials[1], tiny_dataset)


def test_executor_options_are_checked() -> None:
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        Executor("dask")
    with pytest.raises(ValueError, match="--address only applies to --executor ray"):
        Executor("local", address="auto")


@pytest.mark.slow
def test_a_distilled_run_trains_on_ray_after_its_teachers(tiny_dataset: Path, tmp_path: Path,
                                                          ray_session):
    # The workers have none of the teacher runs: the driver writes the targets first, and the
    # student trains on them as it would locally.
    config = tiny_config(6, 6, "fast-64-distilled", sparsity_every=0, teacher_views=1)
    local = cv_trials(config, tmp_path / "local", [0])
    run_trials(tiny_dataset, local, Executor("local"), log=lambda _: None)
    remote = cv_trials(config, tmp_path / "ray", [0])
    outcomes = run_trials(tiny_dataset, remote, Executor("ray"), log=lambda _: None)
    assert outcomes[0].rows and is_complete(remote[0], tiny_dataset)
    assert _accuracies(remote) == _accuracies(local)
    for teacher in ("fast-64-long", "fast-64-wide"):
        assert read_metrics(remote[0].out / "teacher" / teacher)[-1]["step"] == 6
