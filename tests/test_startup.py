"""Deploy commands import no training code; a kept TFLite export runs without TensorFlow.

Each command runs in a fresh Python process on a tiny trained run (the way a user starts it)
and reports the modules it imported; ``facefold --help`` and ``verify --help`` must not import
TensorFlow. The kept export (``RUN/lite``, :func:`facefold.export.keep_lite`) must name the
same people with the same scores as the checkpoint (within 1e-4), and is ignored once the run
has a newer checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import class_pattern, make_tiny_dataset, tiny_config

ROOT = Path(__file__).resolve().parents[1]
# Runs `facefold ARGV...` as the console script does, then writes the imported modules to a
# file (stdout is the command's). `serve` gets a server that returns at once: its imports,
# model load and app are real. With argv[3] "stand-in", the face check of a picture taken
# whole (facefold.faces.plausible, MTCNN in NumPy) passes every picture, as conftest's patch
# does in-process: what is left is the model's side.
DRIVER = """
import json, sys
import facefold.serve.server as server
if sys.argv[3:] == ["stand-in"]:
    import facefold.faces.plausible as plausible
    plausible.face_problem = lambda image: None
server.make_server = lambda *a, **k: type("Quit", (), {"run": lambda self: None})()
from facefold.cli import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    status = exit.code
with open(sys.argv[2], "w") as f:
    json.dump({"status": status, "modules": sorted(sys.modules)}, f)
"""
TRAINING = ("facefold.train", "facefold.evaluate", "facefold.report", "facefold.bench",
            "facefold.fitting", "facefold.demo", "facefold.serve_bench", "ray")
# What a kept TFLite export spares: TensorFlow and what Keras drags in with it.
HEAVY = ("tensorflow", "keras", "matplotlib", "pandas", "sklearn", "mtcnn")


def imported(argv: list[str], tmp_path: Path, face_check: bool = True
             ) -> tuple[int, list[str]]:
    """``(exit status, imported modules)`` of ``facefold ARGV`` in a new process (without
    ``face_check``: the face check stood in for, see :data:`DRIVER`)."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stand_in = [] if face_check else ["stand-in"]
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argv), str(out), *stand_in],
                          env=env, capture_output=True, text=True, timeout=300)
    assert out.exists(), done.stderr[-2000:]
    result = json.loads(out.read_text())
    return result["status"], result["modules"]


def loaded(modules: list[str], families: tuple[str, ...]) -> list[str]:
    """The modules of ``modules`` that are one of ``families`` or inside one."""
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in families)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seed-architecture run on 4 people (20 steps)."""
    from facefold.train import train

    root = tmp_path_factory.mktemp("startup")
    data = make_tiny_dataset(root / "data")
    train(data, tiny_config(steps=20, eval_every=20, sparsity_every=0), root / "run", [0],
          log=lambda _: None)
    return root / "run"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 40x40 pictures of each of the 4 people."""
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(7)
    paths = []
    for label in range(4):
        for i in range(2):
            path = folder / f"p{label}-{i}.png"
            Image.fromarray(class_pattern(label, rng, 40)).save(path)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def lite_run(run_dir: Path) -> Path:
    from facefold.export import keep_lite

    assert keep_lite(run_dir) == run_dir / "lite"
    return run_dir


def commands(run: Path, pictures: list[Path]) -> dict[str, list[str]]:
    a, b = map(str, pictures[:2])
    return {
        "verify": ["verify", str(run), a, b, "--crops", "--threshold", "0.5"],
        "identify": ["identify", str(run), *map(str, pictures), "--crops"],
        "predict": ["predict", str(run), *map(str, pictures)],
        "serve": ["serve", str(run)],
    }


@pytest.mark.parametrize("command", ["--help", "verify --help"])
def test_help_imports_no_tensorflow(command: str, tmp_path: Path) -> None:
    status, modules = imported(command.split(), tmp_path)
    assert status == 0
    assert loaded(modules, ("tensorflow", "keras")) == []


@pytest.mark.parametrize("command", ["verify", "identify", "predict", "serve"])
def test_deploy_command_on_a_kept_tflite_export_imports_no_tensorflow_nor_training_code(
        command: str, lite_run: Path, pictures: list[Path], tmp_path: Path) -> None:
    if command == "serve":
        pytest.importorskip("fastapi")
    status, modules = imported(commands(lite_run, pictures)[command], tmp_path,
                               face_check=False)
    assert status in (0, None, 1) if command == "verify" else status in (0, None)
    assert loaded(modules, TRAINING) == []
    assert loaded(modules, HEAVY) == []
    assert "facefold.predict.lite" in modules


@pytest.mark.parametrize("command", ["verify", "identify", "predict"])
def test_face_check_of_a_crop_starts_no_tensorflow_on_a_kept_export(
        command: str, lite_run: Path, pictures: list[Path], tmp_path: Path) -> None:
    """A picture taken whole is checked to be a face (MTCNN) before it is named: the check
    runs in NumPy from the mtcnn wheel's weights, never importing the mtcnn package (whose
    module starts TensorFlow, 3.5 s of a cold verify). The test's class patterns are no faces:
    verify refuses them with a one-line error, identify names none of them; predict looks
    for faces in them as photos, with the same detector."""
    pytest.importorskip("mtcnn")
    status, modules = imported(commands(lite_run, pictures)[command], tmp_path)
    if command == "verify":
        assert status == 2  # verify's error status: not an answer (0 same, 1 different people)
    assert "facefold.faces.mtcnn" in modules  # the check really ran its detector
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, TRAINING) == []


@pytest.mark.parametrize("command", ["verify", "identify"])
def test_deploy_command_from_a_checkpoint_imports_no_training_code(
        command: str, run_dir: Path, pictures: list[Path], tmp_path: Path) -> None:
    """Without a kept export, Keras runs the checkpoint: TensorFlow, but no training code."""
    bare = tmp_path / "run"
    # The run without its lite folder (the module's other tests keep one in run_dir).
    subprocess.run(["cp", "-r", str(run_dir), str(bare)], check=True)
    subprocess.run(["rm", "-rf", str(bare / "lite")], check=True)
    status, modules = imported(commands(bare, pictures)[command], tmp_path, face_check=False)
    assert status in (0, 1, None)
    assert "tensorflow" in modules  # the Keras path, really taken
    assert loaded(modules, TRAINING) == []


def test_kept_export_names_as_the_checkpoint_does(lite_run: Path, pictures: list[Path]) -> None:
    from facefold.data.images import load_rgb
    from facefold.predict import Predictor

    lite, keras_model = Predictor.load(lite_run), Predictor.load(lite_run, lite=False)
    assert (lite.info.runtime, keras_model.info.runtime) == ("litert", "keras")
    images = [load_rgb(p) for p in pictures]
    want, got = keras_model.recognize(images), lite.recognize(images)
    assert [r.name for r in got] == [r.name for r in want]
    for a, b in zip(got, want, strict=True):
        assert [n for n, _ in a.top] == [n for n, _ in b.top]
        np.testing.assert_allclose([v for _, v in a.top], [v for _, v in b.top], atol=1e-4)
    features = [unit(p.outputs(images)["features"]) for p in (lite, keras_model)]
    np.testing.assert_allclose(features[0], features[1], atol=1e-4)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_kept_export_is_ignored_once_the_run_has_a_newer_checkpoint(
        lite_run: Path, tmp_path: Path) -> None:
    import keras

    from facefold import runs
    from facefold.predict import Predictor
    from facefold.predict.lite import kept_export

    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(lite_run), str(run)], check=True)
    assert Predictor.load(run).info.runtime == "litert"
    step, checkpoint = runs.latest_checkpoint(run)
    # The same bytes under a later step: the same network, the export still holds it.
    runs.checkpoint_path(run, step + 1).write_bytes(checkpoint.read_bytes())
    assert kept_export(run) == run / "lite"
    # Other weights (trained on): the export is stale, the checkpoint is run by Keras.
    model = keras.models.load_model(checkpoint, compile=False)
    model.set_weights([w + 0.01 for w in model.get_weights()])
    model.save(runs.checkpoint_path(run, step + 2))
    assert kept_export(run) is None
    assert Predictor.load(run).info.runtime == "keras"


def test_faces_crop_imports_no_tensorflow(pictures: list[Path], tmp_path: Path) -> None:
    """``faces crop`` runs MTCNN in NumPy: the command no longer starts TensorFlow first."""
    pytest.importorskip("mtcnn")
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in pictures[:2]:
        (photos / path.name).write_bytes(path.read_bytes())
    status, modules = imported(["faces", "crop", str(photos), "--out", str(tmp_path / "out")],
                               tmp_path)
    assert status in (0, None)
    assert "facefold.faces.mtcnn" in modules
    assert loaded(modules, HEAVY) == []
