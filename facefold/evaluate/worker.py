"""The part of the Ray executor that runs on a worker node.

This module imports nothing heavy at import time, so that a node without
TensorFlow (or without facefold's dependencies) fails with a message that
says so, instead of an unpickling error.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path


def train_in_worker(
    dataset: dict[str, bytes], config: dict, fold: int, existing: dict[str, bytes],
    driver_data: str, excluded: list[int] | None = None, threads: int = 0,
) -> dict[str, bytes]:
    """Train one trial in a temporary folder of this process and return the run folder's files.

    Runs inside a Ray worker (or anywhere: it needs no shared file system).
    ``dataset`` holds the dataset folder's files, ``config`` a
    :meth:`~facefold.config.Config.to_dict`, ``existing`` the files the driver
    already has for this run (so an interrupted trial resumes), ``excluded`` the shards
    it neither trains nor evaluates on, ``threads`` TensorFlow's threads (the trial's CPUs:
    by default TensorFlow takes one per core of the node, and trials sharing a node would
    then fight over them; 0 leaves the default). The returned ``run.json`` names
    ``driver_data`` as the dataset.
    """
    try:
        from facefold import runs
        from facefold.config import Config
        from facefold.train.trainer import Trainer
    except ImportError as err:
        raise RuntimeError(
            f"Ray worker on node {socket.gethostname()} cannot import TensorFlow/facefold "
            f"({err}); install facefold with the same versions on every node of the cluster"
        ) from err
    if threads:
        _limit_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="facefold-trial-"))
    try:
        data_dir, run_dir = work / "data", work / "run"
        data_dir.mkdir()
        for name, content in dataset.items():
            (data_dir / name).write_bytes(content)
        existing = dict(existing)
        runs.set_data_dir_note(existing, str(data_dir.resolve()))
        for name, content in existing.items():
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / name).write_bytes(content)
        Trainer(data_dir, Config.from_dict(config), run_dir, [fold], log=print,
                excluded_shards=excluded or ()).run()
        files = runs.run_files(run_dir)
        runs.set_data_dir_note(files, driver_data)
        return files
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _limit_threads(threads: int) -> None:
    """Run TensorFlow's ops on ``threads`` threads in this worker process. Possible only
    before TensorFlow's first op: a Ray worker reused for a second trial keeps the setting
    of its first, which is the same number for trials of one run."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError:
        pass
