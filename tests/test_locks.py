"""One writer per output folder (facefold.locks): real processes racing, killed, refused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import write_image_tree

from facefold import locks
from facefold.data import records
from facefold.data.build import build_dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# A real build in its own process. With PAUSE > 0 it stops for PAUSE seconds once its staging
# folder holds the new shards (after writing SIGNAL), so another process can come in
# mid-build. With GO set it first waits for that file, so that two builds start together.
# Exit 2 when refused (the CLI's status), 0 when built.
BUILD = """
import sys, time
from pathlib import Path
from facefold.data import build
src, out, pause, signal_file, go = sys.argv[1:6]
if float(pause):
    real = build._write
    def slow(stage, *args, **kwargs):
        result = real(stage, *args, **kwargs)
        Path(signal_file).write_text(str(stage))
        time.sleep(float(pause))
        return result
    build._write = slow
if go:
    while not Path(go).exists():
        time.sleep(0.001)
try:
    build.build_dataset(src, out, shards=2, per_class=6, size=32, near_duplicates=0,
                        overwrite=True, log=lambda line: None)
except RuntimeError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
"""

HOLD = """
import sys, time
from facefold.locks import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    write_image_tree(folder, dict.fromkeys(["ann", "ben", "cal"], 6), size=(32, 32))
    return folder


def start_build(src: Path, out: Path, pause: float = 0, signal_file: Path | None = None,
                go: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", BUILD, str(src), str(out), str(pause), str(signal_file or ""),
         str(go or "")], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def assert_whole(out: Path) -> None:
    """``out`` is one complete dataset: its manifest names shards that exist with those
    SHA-256s and labels.txt holds its people; no temporary folder is left beside it."""
    manifest = json.loads((out / records.MANIFEST_FILE).read_text())
    assert sorted(manifest["shard_sha256"]) == ["data-00.tfrecords", "data-01.tfrecords"]
    for name, digest in manifest["shard_sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert records.read_labels(out) == manifest["people"]
    assert sorted(manifest["people"]) == ["ann", "ben", "cal"]
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen]]:
    """``holder(out)``: another process holding ``out``'s lock (killed at the end)."""
    started: list[subprocess.Popen] = []

    def hold(out: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=ENV,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline() == "held\n"
        return process

    yield hold
    for process in started:
        process.kill()
        process.wait()


def test_build_mid_way_refuses_second_build_and_keeps_its_staging(src: Path,
                                                                  tmp_path: Path) -> None:
    """A second build while the first is writing is refused (naming the folder and the first
    one's pid); the first one's staging folder survives and it finishes whole. (Before: the
    second deleted the first's staging folder as stale.)"""
    out, signal_file = tmp_path / "ds", tmp_path / "staged"
    first = start_build(src, out, pause=3, signal_file=signal_file)
    wait_for(signal_file, first)
    stage = Path(signal_file.read_text())
    second = start_build(src, out)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2, err
    assert str(out) in err and f"pid {first.pid}" in err and "being written" in err
    assert stage.is_dir()
    assert first.wait(timeout=60) == 0, first.communicate()
    assert_whole(out)
    assert not locks.lock_path(out).exists()  # removed by its holder on release


@pytest.mark.slow  # 8 to 12 processes that each start TensorFlow to write shards
def test_racing_overwrite_builds_leave_a_whole_dataset(src: Path, tmp_path: Path) -> None:
    """Two builds started together into the same --out, 4 trials: each ends built (0) or
    refused (2, with the message), and the folder is always one whole dataset."""
    statuses = []
    for trial in range(4):
        out, go = tmp_path / f"ds{trial}", tmp_path / f"go{trial}"
        if trial % 2:  # an --overwrite of an existing dataset, as in the issue
            start_build(src, out).wait(timeout=60)
        pair = [start_build(src, out, go=go) for _ in range(2)]
        time.sleep(0.5)  # both imported and waiting
        go.touch()
        for process in pair:
            _, err = process.communicate(timeout=60)
            statuses.append(process.returncode)
            assert process.returncode in (0, 2), err
            if process.returncode == 2:
                assert str(out) in err and "being written" in err
        assert_whole(out)
    assert 0 in statuses


def test_killed_holder_leaves_no_lock(src: Path, tmp_path: Path,
                                     holder: Callable[[Path], subprocess.Popen]) -> None:
    """A writer killed (SIGKILL) while holding the lock holds nothing: the next build
    proceeds (the kernel drops a flock with its process) and publishes a whole dataset."""
    out = tmp_path / "ds"
    other = holder(out)
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert locks.lock_path(out).exists()  # what a kill leaves: a file, not a lock
    build_dataset(src, out, shards=2, per_class=6, size=32, near_duplicates=0,
                  log=lambda line: None)
    assert_whole(out)


def test_cli_refuses_with_status_2(src: Path, tmp_path: Path,
                                   holder: Callable[[Path], subprocess.Popen]) -> None:
    """`facefold dataset build` into a folder another process writes: one line, status 2,
    nothing written."""
    out = tmp_path / "ds"
    other = holder(out)
    done = subprocess.run(
        [sys.executable, "-m", "facefold.cli", "dataset", "build", str(src), "--out", str(out),
         "--per-class", "6", "--shards", "2", "--size", "32"],
        env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facefold: error: ")
    assert str(out) in lines[0] and f"pid {other.pid}" in lines[0]
    assert not out.exists()


def writers() -> dict[str, Callable[[Path, Path], object]]:
    """Every library function that writes an output folder, called with a busy ``out``."""
    from facefold.config import Config
    from facefold.evaluate.cv import run_cv
    from facefold.evaluate.experiment import run_experiment
    from facefold.faces.cluster import cluster_faces
    from facefold.faces.crop import crop_faces
    from facefold.fitting import fit, measure_enrollment

    return {
        "build": lambda data, out: build_dataset(data, out),
        "build spare": lambda data, out: build_dataset(data, out.parent / "ds", spare=out),
        "fit": lambda data, out: fit(data, Config(), out),
        "measure_enrollment": lambda data, out: measure_enrollment(data, Config(), out),
        "cv": lambda data, out: run_cv(data, Config(), out),
        "experiment": lambda data, out: run_experiment(data, ["fast"], out),
        "crop": lambda data, out: crop_faces(data, out),
        "cluster": lambda data, out: cluster_faces(data, out),
    }


@pytest.mark.parametrize("name", list(writers()))
def test_every_writer_takes_the_lock(name: str, tmp_path: Path,
                                     holder: Callable[[Path], subprocess.Popen]) -> None:
    """Each writer is refused before it reads or writes anything when another process holds
    its output folder (the data folder does not even exist)."""
    out = tmp_path / "out"
    other = holder(out)
    with pytest.raises(locks.FolderBusyError, match=f"pid {other.pid}"):
        writers()[name](tmp_path / "missing", out)
    assert not out.exists()


def test_lock_is_reentrant_and_removed(tmp_path: Path) -> None:
    """Held twice by one process (a command calling another), released once at the end."""
    out = tmp_path / "out"
    with locks.folder_lock(out):
        with locks.folder_lock(tmp_path / "." / "out"):
            holder = json.loads(locks.lock_path(out).read_text())
            assert holder["pid"] == os.getpid()
        assert locks.lock_path(out).exists()
    assert not locks.lock_path(out).exists()
