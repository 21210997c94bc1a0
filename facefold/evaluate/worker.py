"""The part of the Ray executor that runs on a worker node.

This module imports nothing heavy at import time, so that a node without
TensorFlow (or without facefold's dependencies) fails with a message that
says so, instead of an unpickling error.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path


def train_in_worker(
    dataset: dict[str, bytes], config: dict, fold: int, existing: dict[str, bytes],
    driver_data: str, excluded: list[int] | None = None, threads: int = 0, onednn: str = "",
) -> dict[str, bytes]:
    """Train one trial in a temporary folder of this process and return the run folder's files.

    Runs inside a Ray worker (or anywhere: it needs no shared file system).
    ``dataset`` holds the dataset folder's files, ``config`` a
    :meth:`~facefold.config.Config.to_dict`, ``existing`` the files the driver
    already has for this run (so an interrupted trial resumes), ``excluded`` the shards
    it neither trains nor evaluates on. ``threads`` (TensorFlow's intra-op threads) and
    ``onednn`` (``TF_ENABLE_ONEDNN_OPTS``, "" = TensorFlow's default) are the driver's: both
    change how sums are rounded, so a trial computes what the local executor would only with
    the same two (0 threads leaves TensorFlow's default). The returned ``run.json`` names
    ``driver_data`` as the dataset.
    """
    from facefold.machine import ONEDNN_ENV, set_tf_threads

    if onednn:  # read once, when TensorFlow starts in this process
        os.environ[ONEDNN_ENV] = onednn
    try:
        from facefold import runs
        from facefold.config import Config
        from facefold.train.trainer import Trainer
    except ImportError as err:
        raise RuntimeError(
            f"Ray worker on node {socket.gethostname()} cannot import TensorFlow/facefold "
            f"({err}); install facefold with the same versions on every node of the cluster"
        ) from err
    set_tf_threads(threads)
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

