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
already complete (:func:`facefold.runs.is_finished`) are skipped, so re-running
resumes only the missing ones. A trial's folder holding a run of other data or
another config stops everything before any training
(:class:`~facefold.runs.RunMismatchError`), unless ``restart`` discards it.

An ensemble trial is expanded into its members' trials (each in the folder the
trial hands it, see :class:`Trial`), which run like any other, in parallel under
Ray; the ensemble is then combined on the driver (:func:`facefold.train.ensemble.combine`).
A weighted ensemble's inner-split runs (:func:`facefold.train.ensemble.inner_runs`)
are trials too, beside its members': they are ordinary trainings that need nothing
but the data (a held-out shard and excluded ones, :attr:`Trial.excluded`), so under
Ray they run in parallel with the members instead of one after another inside the
ensemble's combination, and a failed or interrupted one is retried or resumed alone.
"""

from __future__ import annotations

import shutil
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefold import runs
from facefold.choices import EXECUTORS
from facefold.config import Config
from facefold.data.records import LABELS_FILE, MANIFEST_FILE, list_shards
from facefold.evaluate.worker import train_in_worker
from facefold.log import Log
from facefold.machine import onednn_setting, tf_threads
from facefold.models.families import Ensemble, SplitSource, family_of, identity_of, leaf_configs
from facefold.train import distill
from facefold.train.ensemble import combine, inner_runs, inner_shards, member_runs
from facefold.train.precision import resolve_precision
from facefold.train.trainer import CommandPlan, Trainer, split_folds


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
    """One training run: ``config`` trained on every shard but ``fold``, written to ``out``.

    ``members`` hands an ensemble's members, or a distilled run's teacher runs, their run
    folders by preset, e.g. the experiment's own ``OUT/fast/case-K`` for member ``fast``;
    one not listed is trained into ``out/members/<preset>`` (``out/teacher/<preset>``).
    ``excluded`` are shards neither trained nor evaluated on (a weighted ensemble's
    inner-split runs exclude its held-out fold).
    """

    name: str  # shown in logs, e.g. "seed/case-0"
    config: Config
    fold: int
    out: Path
    members: Mapping[str, Path] = field(default_factory=dict, compare=False, hash=False)
    excluded: tuple[int, ...] = ()

    def identity(self, data: dict) -> dict:
        """The run identity this trial's folder must hold, for the dataset ``data``."""
        return identity_of(data, [self.fold], self.config, excluded=self.excluded)


@dataclass(frozen=True)
class TrialOutcome:
    """What became of a trial: its evaluation rows, or the error that stopped it."""

    trial: Trial
    rows: list[dict] | None = None
    error: str | None = None
    skipped: bool = False  # already complete before this call


class TrialsFailed(RuntimeError):
    """Some trials failed; the others finished and their folders are complete."""


def is_complete(trial: Trial, data_dir: str | Path) -> bool:
    """True when ``trial.out`` holds a finished run of ``trial`` on the dataset in
    ``data_dir`` (the one rule: :func:`facefold.runs.is_finished`)."""
    return runs.is_finished(trial.out, trial.identity(runs.data_fingerprint(data_dir)))


Members = list[tuple[Config, Path]]


def _expand(trials: Sequence[Trial], num_shards: int
            ) -> tuple[list[Trial], dict[str, tuple[Members, Members]]]:
    """The trials that train a network (an ensemble's members and inner-split runs in its
    place, each once) and, per ensemble trial, ``(members, inner runs)``: configs and
    folders. ``ValueError`` before any work for a weighted ensemble with too few shards."""
    # The one switch on the family here: an ensemble trial is done by combining other trials
    # (train.ensemble.combine, a layer above the families), every other trial trains a network.
    combined = [t for t in trials if isinstance(family_of(t.config), Ensemble)]
    leaves: dict[Path, Trial] = {}
    for trial in trials:  # a trial asked for keeps its folder before any member run may take it
        if trial not in combined:
            leaves.setdefault(trial.out.resolve(), trial)
    ensembles = {}
    for trial in combined:
        members = member_runs(trial.config, trial.out, trial.members)
        inner = inner_runs(trial.config, trial.out)
        ensembles[trial.name] = members, inner
        for member, out in members:
            leaves.setdefault(out.resolve(), Trial(f"{trial.name}/{member.preset}", member,
                                                   trial.fold, out))
        for member, out in inner:
            (fold,) = inner_shards([trial.fold], num_shards)
            leaves.setdefault(out.resolve(), Trial(
                f"{trial.name}/inner/{member.preset}", member, fold, out,
                excluded=(trial.fold,)))
    for student in [t for t in leaves.values() if _learns_from_others(t)]:
        for teacher, out in distill.teacher_runs(student.config, student.out, student.members):
            leaves.setdefault(out.resolve(), Trial(
                f"{student.name}/teacher/{teacher.preset}", teacher, student.fold, out,
                excluded=student.excluded))
    return list(leaves.values()), ensembles


def _learns_from_others(leaf: Trial) -> bool:
    """Whether a trial that trains a network needs other runs of its fold finished first (a
    distilled CNN: its teachers'); an ensemble's members are expanded into leaves before."""
    return bool(family_of(leaf.config).dependencies(leaf.config))


def run_trials(
    data_dir: str | Path,
    trials: Sequence[Trial],
    executor: Executor = LOCAL,
    log: Log = print,
    restart: bool = False,
    before: Callable[[], None] | None = None,
) -> list[TrialOutcome]:
    """Run every trial that is not complete yet; return one outcome per trial, in order.

    ``before`` is called once every folder has been checked and before any is written
    (the caller writes its ``cv.json`` there, so a refused call leaves nothing behind).

    Raises, before any trial starts: ``ValueError`` for an unreachable cluster or a
    resource request it cannot meet, :class:`~facefold.runs.RunMismatchError` for a folder
    of another run (unless ``restart``, which discards it); :class:`TrialsFailed` after the
    others finished when some trials failed.
    """
    data_dir = Path(data_dir)
    for trial in trials:  # a missing optional extra (e.g. facefold[dlib]) fails before any work
        family_of(trial.config).check_available(trial.config)
    data = runs.data_fingerprint(data_dir)
    leaves, ensembles = _expand(trials, len(data["shards"]))
    # Each folder is read once, before any work: a run of other data is refused here, and what
    # the check found (same run or not) decides below.
    same = {trial.name: runs.check_run_dir(trial.out, trial.identity(data), restart)
            for trial in [*leaves, *(t for t in trials if t.name in ensembles)]}
    if before is not None:
        before()
    pending = []
    for trial in leaves:
        if same[trial.name] and runs.is_finished(trial.out, trial.identity(data)):
            log(f"[{trial.name}] complete, skipped")
            continue
        if runs.is_run(trial.out) and not same[trial.name]:
            log(f"[{trial.name}] --restart: discarding {trial.out}, a run of other data or "
                "settings")
            shutil.rmtree(trial.out)
        pending.append(trial)
    if executor.kind != "local":
        _choose_precisions(pending, len(data["labels"]), log)
    run = _run_local if executor.kind == "local" else _run_ray
    finished = run(data_dir, [t for t in pending if not _learns_from_others(t)], executor, log,
                   data)
    students = [t for t in pending if _learns_from_others(t)]
    # The second wave: distilled runs, whose targets need their teachers' finished runs.
    if students:
        ready = _prepare_students(data_dir, students, leaves, finished, log)
        finished.update({t.name: o for t, o in ready.items() if o is not None})
        finished.update(run(data_dir, [t for t, o in ready.items() if o is None], executor,
                            log, data))
    outcomes = {t.name: finished.get(t.name) or TrialOutcome(t, skipped=True) for t in leaves}
    for trial in trials:
        if trial.name in ensembles:
            outcomes[trial.name] = _combine(data_dir, trial, ensembles[trial.name], outcomes,
                                            pending, log, data, restart)
    results = [outcomes[t.name] for t in trials]
    failed = [o for o in {id(o): o for o in outcomes.values()}.values() if o.error]
    if failed:
        details = "\n".join(f"  {o.trial.name}: {o.error.splitlines()[-1]}" for o in failed)
        raise TrialsFailed(
            f"{len(failed)} of {len(outcomes)} trials failed (the others finished; run the same "
            f"command again to retry only these):\n{details}"
        )
    return results


def _choose_precisions(trials: Sequence[Trial], num_classes: int, log: Log) -> None:
    """Time ``precision: auto`` here, once per model shape, before trials run in parallel:
    timings taken while other trials train would be slowed by them, and each trial would
    pay for its own. The choice lands in the user cache, where the trials find it (on this
    machine; a cluster node of another CPU times its own)."""
    seen = set()
    for trial in trials:
        config = trial.config
        if config.train.precision != "auto" or runs.is_run(trial.out):
            continue  # a started run keeps the precision it recorded
        key = (config.family, config.model, config.train.batch_size)
        if key not in seen:
            seen.add(key)
            precision, why = resolve_precision("auto", config, num_classes)
            log(f"[{trial.name}] precision {precision} ({why})")


def _combine(data_dir: Path, trial: Trial, runs_of: tuple[Members, Members],
             outcomes: dict[str, TrialOutcome], pending: list[Trial], log: Log, data: dict,
             restart: bool) -> TrialOutcome:
    """The ensemble trial's outcome: its members (weighted by their inner-split runs)
    combined, or why it could not be."""
    members, inner = runs_of
    by_out = {o.trial.out.resolve(): o for o in outcomes.values()}
    needed = [out.resolve() for _, out in [*members, *inner]]
    failed = [by_out[out] for out in needed if by_out[out].error]
    if failed:
        return TrialOutcome(trial, error=f"member {failed[0].trial.name} failed: "
                                         f"{failed[0].error.splitlines()[-1]}")
    if runs.is_finished(trial.out, trial.identity(data)) and not any(
            t.out.resolve() in set(needed) for t in pending):
        return TrialOutcome(trial, skipped=True)
    # Reused: a run the ensemble did not train for itself (handed over by the caller, e.g. the
    # experiment's own run of that preset, or finished before this call).
    own = {t.out.resolve() for t in pending if t.name.startswith(f"{trial.name}/")}
    reused = {m.preset: out.resolve() not in own for m, out in members}
    for member, out in members:
        if reused[member.preset]:
            log(f"[{trial.name}] member {member.preset}: reusing the finished run {out}")
    try:
        rows = combine(data_dir, trial.config, trial.out, [trial.fold], members, reused, log,
                       data=data, restart=restart, inner=inner)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:
        return TrialOutcome(trial, error=f"{type(err).__name__}: {err}")
    return TrialOutcome(trial, rows=rows)


def _prepare_students(data_dir: Path, students: list[Trial], leaves: list[Trial],
                      finished: dict[str, TrialOutcome], log: Log
                      ) -> dict[Trial, TrialOutcome | None]:
    """Write each distilled trial's teacher targets here, on the driver (a Ray worker has
    none of the teacher runs). Maps each trial to None when it is ready to train, or to the
    failed outcome of a teacher it needs."""
    by_out = {t.out.resolve(): t for t in leaves}
    source = SplitSource(data_dir, log)
    ready: dict[Trial, TrialOutcome | None] = {}
    for trial in students:
        dirs = [out for _, out in distill.teacher_runs(trial.config, trial.out, trial.members)]
        outcomes = [finished.get(by_out[d.resolve()].name) for d in dirs]
        failed = [o for o in outcomes if o is not None and o.error]
        if failed:
            ready[trial] = TrialOutcome(trial, error=f"teacher {failed[0].trial.name} failed: "
                                                     f"{failed[0].error.splitlines()[-1]}")
            continue
        try:
            train, _ = split_folds(source.get(trial.config), [trial.fold],
                                   excluded=trial.excluded)
            distill.prepare_targets(trial.out, trial.config, train, dirs, log)
            ready[trial] = None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            log(f"[{trial.name}] FAILED: {err}")
            ready[trial] = TrialOutcome(trial, error=f"{type(err).__name__}: {err}")
    return ready


def _run_local(
    data_dir: Path, trials: list[Trial], executor: Executor, log: Log, data: dict
) -> dict[str, TrialOutcome]:
    # Load each kind of input (decoded images, embeddings) once for all trials, up front: a
    # broken dataset stops everything at once.
    source = SplitSource(data_dir, log)
    for trial in trials:
        for config in leaf_configs(trial.config):
            source.get(config)
    outcomes = {}
    # One after another: the first run's first steps tell how long all of them will take.
    plan = CommandPlan("trials", sum(t.config.train.steps for t in trials), len(trials), log)
    for trial in trials:
        try:
            rows = Trainer(data_dir, trial.config, trial.out, [trial.fold], source, log,
                           data=data, excluded_shards=trial.excluded,
                           teacher_dirs=trial.members, plan=plan).run()
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


def _run_ray(
    data_dir: Path, trials: list[Trial], executor: Executor, log: Log, data: dict
) -> dict[str, TrialOutcome]:
    ray = _import_ray()
    _connect(ray, executor)
    cpus, gpus = executor.cpus_per_trial, executor.gpus_per_trial
    if not trials:
        return {}
    # max_calls=1: a fresh worker process per trial, since TensorFlow's thread count can be set
    # only before its first op and a reused worker would keep another trial's setting.
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=1)(
        train_in_worker)
    dataset = ray.put(_dataset_files(data_dir))
    driver_data = str(data_dir.resolve())
    # Each trial computes with this process's thread count and oneDNN setting, whatever its CPU
    # request: the local executor's results, not only its accuracies (docs/cluster.md).
    threads, onednn = tf_threads(), onednn_setting()
    futures = {
        remote.remote(dataset, t.config.to_dict(), t.fold, runs.run_files(t.out), driver_data,
                      list(t.excluded), threads, onednn): t
        for t in trials
    }
    log(f"submitted {len(futures)} trials to Ray ({cpus:g} CPU, {gpus:g} GPU each; "
        f"{threads} TensorFlow thread(s) each, as here)")
    outcomes = {}
    waiting = list(futures)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        trial = futures[done[0]]
        try:
            runs.write_run_files(trial.out, ray.get(done[0]))
            outcomes[trial.name] = TrialOutcome(trial, rows=runs.read_metrics(trial.out))
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
