"""Run training trials — one (config, held-out fold) pair each — locally or on a Ray cluster.

Both executors produce the same run folders on the driver (``Trial.out``),
and since every batch and every initial weight is a pure function of the
seed, the same trials give the same accuracies whichever executor ran them.

``local`` trains the trials one after another in this process, decoding each
dataset once. ``ray`` makes every trial one Ray task with its own CPU/GPU
request: the driver puts the dataset's files in Ray's object store once, a
worker trains in a temporary folder of its own (resuming from the files the
driver already has) and sends the run folder back, and the driver writes it
into ``Trial.out`` — so no shared file system is needed. A trial that fails is
reported with its error while the others finish; trials whose run folder is
already complete are skipped, so re-running resumes only the missing ones.
"""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facefold.config import Config
from facefold.data.records import (
    LABELS_FILE,
    MANIFEST_FILE,
    atomic_path,
    list_shards,
)
from facefold.embeddings.shards import SplitSource, check_inputs
from facefold.evaluate.worker import run_files, train_in_worker
from facefold.models.presets import leaf_configs
from facefold.train.trainer import Log, read_metrics, train

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """Where trials run: ``kind`` local or ray; Ray's ``address`` (None = embedded Ray,
    ``"auto"`` or ``"ray://host:port"`` = an existing cluster) and each trial's request."""

    kind: str = "local"
    address: str | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.address and self.kind != "ray":
            raise ValueError("--address only applies to --executor ray")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError(
                f"cpus per trial must be > 0 and GPUs per trial >= 0, got "
                f"{self.cpus_per_trial} and {self.gpus_per_trial}"
            )


LOCAL = Executor()  # the default: one trial after another in this process


@dataclass(frozen=True)
class Trial:
    """One training run: ``config`` trained on every shard but ``fold``, written to ``out``."""

    name: str  # shown in logs, e.g. "seed/case-0"
    config: Config
    fold: int
    out: Path


@dataclass(frozen=True)
class TrialOutcome:
    """What became of a trial: its evaluation rows, or the error that stopped it."""

    trial: Trial
    rows: list[dict] | None = None
    error: str | None = None
    skipped: bool = False  # already complete before this call


class TrialsFailed(RuntimeError):
    """Some trials failed; the others finished and their folders are complete."""


def is_complete(trial: Trial) -> bool:
    """True when ``trial.out`` holds a finished run of ``trial.config``.

    Finished means: the same resolved config, metrics up to the last step, and predictions.
    """
    run_file = trial.out / "run.json"
    if not run_file.is_file() or not (trial.out / "predictions.npz").is_file():
        return False
    try:
        same = Config.from_dict(json.loads(run_file.read_text())["config"]) == trial.config
    except (KeyError, ValueError):
        return False
    rows = read_metrics(trial.out)
    return same and bool(rows) and rows[-1]["step"] == trial.config.train.steps


def run_trials(
    data_dir: str | Path,
    trials: Sequence[Trial],
    executor: Executor = LOCAL,
    log: Log = print,
) -> list[TrialOutcome]:
    """Run every trial that is not complete yet; return one outcome per trial, in order.

    Raises ``ValueError`` for an unreachable cluster or a resource request it
    cannot meet, before any trial starts; raises :class:`TrialsFailed` after
    the others finished when some trials failed.
    """
    pending = [t for t in trials if not is_complete(t)]
    for trial in trials:
        if trial not in pending:
            log(f"[{trial.name}] complete, skipped")
    for trial in pending:  # a missing optional extra (e.g. facefold[dlib]) fails before any work
        for config in leaf_configs(trial.config):
            check_inputs(config)
    run = _run_local if executor.kind == "local" else _run_ray
    finished = run(Path(data_dir), pending, executor, log)
    outcomes = [finished.get(t.name) or TrialOutcome(t, skipped=True) for t in trials]
    failed = [o for o in outcomes if o.error]
    if failed:
        details = "\n".join(f"  {o.trial.name}: {o.error.splitlines()[-1]}" for o in failed)
        raise TrialsFailed(
            f"{len(failed)} of {len(trials)} trials failed (the others finished; run the same "
            f"command again to retry only these):\n{details}"
        )
    return outcomes


def _run_local(
    data_dir: Path, trials: list[Trial], executor: Executor, log: Log
) -> dict[str, TrialOutcome]:
    # Load each kind of input (decoded images, embeddings) once for all trials, up front: a
    # broken dataset stops everything at once.
    source = SplitSource(data_dir, log)
    for trial in trials:
        for config in leaf_configs(trial.config):
            source.get(config)
    outcomes = {}
    for trial in trials:
        try:
            rows = train(data_dir, trial.config, trial.out, [trial.fold], source, log)
            outcomes[trial.name] = TrialOutcome(trial, rows=rows)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # one trial's failure must not stop the others
            log(f"[{trial.name}] FAILED: {err}")
            outcomes[trial.name] = TrialOutcome(trial, error=f"{type(err).__name__}: {err}")
    return outcomes


# ---------------------------------------------------------------- Ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "the ray executor needs Ray: pip install 'facefold[ray]' (on every node of the cluster)"
        ) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (Ray itself would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"Ray address must be 'auto', host:port or ray://host:port, got {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"cannot start or reach Ray at {address}: {err}") from err


def _connect(ray: Any, executor: Executor) -> None:
    """Start an embedded Ray or join a cluster; check the cluster can run one trial."""
    address, cpus, gpus = executor.address, executor.cpus_per_trial, executor.gpus_per_trial
    if not ray.is_initialized():
        if address and address != "auto":
            _check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError …
            where = address or "an embedded single-machine Ray"
            raise ValueError(f"cannot start or reach Ray at {where}: {err}") from err
    resources = ray.cluster_resources()
    if gpus and resources.get("GPU", 0) < gpus:
        raise ValueError(
            f"each trial asks for {gpus} GPU(s) but the Ray cluster has "
            f"{resources.get('GPU', 0):g}; use --gpus-per-trial 0 or add GPU nodes"
        )
    if resources.get("CPU", 0) < cpus:
        raise ValueError(
            f"each trial asks for {cpus} CPU(s) but the Ray cluster has {resources.get('CPU', 0):g}"
        )


def _dataset_files(data_dir: Path) -> dict[str, bytes]:
    """The files a worker needs to rebuild the dataset folder: shards, labels, manifest."""
    names = [p.name for p in list_shards(data_dir)] + [LABELS_FILE]
    if (data_dir / MANIFEST_FILE).is_file():
        names.append(MANIFEST_FILE)
    return {name: (data_dir / name).read_bytes() for name in names}


def _write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a worker's run folder on the driver.

    Metrics and predictions go last, so a copy cut short looks unfinished, not complete.
    """
    last = ("predictions.npz", "metrics.jsonl")
    for name in sorted(files, key=lambda n: (n in last, last.index(n) if n in last else 0, n)):
        with atomic_path(run_dir / name) as tmp:
            tmp.write_bytes(files[name])


def _run_ray(
    data_dir: Path, trials: list[Trial], executor: Executor, log: Log
) -> dict[str, TrialOutcome]:
    ray = _import_ray()
    _connect(ray, executor)
    cpus, gpus = executor.cpus_per_trial, executor.gpus_per_trial
    if not trials:
        return {}
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(train_in_worker)
    dataset = ray.put(_dataset_files(data_dir))
    driver_data = str(data_dir.resolve())
    futures = {
        remote.remote(dataset, t.config.to_dict(), t.fold, run_files(t.out), driver_data): t
        for t in trials
    }
    log(f"submitted {len(futures)} trials to Ray ({cpus:g} CPU, {gpus:g} GPU each)")
    outcomes = {}
    waiting = list(futures)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        trial = futures[done[0]]
        try:
            _write_run_files(trial.out, ray.get(done[0]))
            outcomes[trial.name] = TrialOutcome(trial, rows=read_metrics(trial.out))
            log(f"[{trial.name}] finished on Ray: "
                f"accuracy {outcomes[trial.name].rows[-1]['eval_accuracy']:.4f}")
        except Exception as err:  # a failed task: report it, keep collecting the others
            message = _ray_error_message(err)
            log(f"[{trial.name}] FAILED on Ray: {message.splitlines()[-1]}")
            outcomes[trial.name] = TrialOutcome(trial, error=message)
    return outcomes


def _ray_error_message(err: Exception) -> str:
    """The worker's own exception, not Ray's wrapper, when there is one."""
    cause = getattr(err, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    return text.splitlines()[-1] if text else type(err).__name__
