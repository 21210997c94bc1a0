"""One-file exports of a real dlib128 model: chips in, names out, with TensorFlow alone.

A ``dlib128`` model fit on five ORL people is exported in every format; the export holds
dlib's network (in Keras) and the head, and takes each face's aligned chip and its mirror's.
The chips of every test picture are cut here (with dlib), and the exports name them in a
subprocess where ``import dlib`` fails: the names and scores must be the model folder's for
the same pictures. A model recorded with dlib's own descriptor (the ``dlib`` backend's model
version, the same weights) still loads and exports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset_path
from PIL import Image

from facefold import runs
from facefold.embeddings import dlib128
from facefold.export import export_run
from facefold.models.presets import resolve_config
from facefold.predict import Predictor

PEOPLE = ["s1", "s2", "s3", "s4", "s5"]
STRANGER = "s6"  # never trained on: named "unknown" or not, as the model folder says

# Runs in the subprocess: dlib (and the weights package) cannot be imported, then each export
# names the chips; prints what it found as JSON.
WITHOUT_DLIB = """
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dlib", "_dlib_pybind11", "face_recognition_models"):
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, Blocked())
try:
    import dlib  # noqa: F401
    raise SystemExit("dlib was importable")
except ImportError:
    pass
import numpy as np
from facefold.predict import Predictor

chips = np.load(sys.argv[1])
found = {}
for folder in sys.argv[2:]:
    predictor = Predictor.load(folder)
    faces = predictor.recognize_model_inputs(chips, top_k=1)
    found[folder] = {"names": [f.name for f in faces], "scores": [f.score for f in faces],
                     "features": predictor.outputs_for_model_inputs(chips)["features"].tolist()}
found["dlib_loaded"] = any(m.split(".")[0] == "dlib" for m in sys.modules)
print(json.dumps(found))
"""


def fit_orl(root: Path, preset: str) -> tuple[Path, list[Image.Image], list[str]]:
    """``(model, pictures, people)``: ``preset`` fit in ``root`` on 8 photos of each of 5 ORL
    people (the real embedding), the pictures it never saw (their other 2 photos, then a
    stranger's 3) and the person of each (the stranger's folder name last)."""
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    orl = shared_dataset_path("orl")
    from facefold.data.build import build_dataset
    from facefold.fitting import fit

    faces = root / "faces"
    for person in PEOPLE:
        shutil.copytree(orl / person, faces / person)
    quiet = {"log": lambda _: None}
    build_dataset(faces, root / "data", shards=2, per_class=8, near_duplicates=0,
                  spare=root / "spare", **quiet)
    config = resolve_config(preset).replace(
        train={"steps": 300, "eval_every": 300, "batch_size": 8})
    fit(root / "data", config, root / "model", groups=2, far=0.2, **quiet)
    files = sorted(p for p in (root / "spare").rglob("*") if p.is_file())
    files += sorted((orl / STRANGER).glob("*.pgm"))[:3]
    return (root / "model", [Image.open(p).convert("RGB") for p in files],
            [p.parent.name for p in files])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Image.Image]]:
    """``(model, pictures)`` of :func:`fit_orl` with dlib128."""
    model, pictures, _ = fit_orl(tmp_path_factory.mktemp("export-embedding"), "dlib128")
    return model, pictures


@pytest.mark.slow
def test_exports_name_chips_without_dlib_as_the_model_folder(
        fitted: tuple[Path, list[Image.Image]], tmp_path: Path) -> None:
    model, pictures = fitted
    folder = Predictor.load(model)
    assert len(pictures) == 13 and folder.info.embedding["views"] == 2
    expected = folder.recognize(pictures, top_k=1)
    features = folder.outputs(pictures)["features"]
    assert len({f.name for f in expected} - {"unknown"}) >= 3  # it names people

    exports = [export_run(model, fmt, tmp_path / fmt) for fmt in ("keras", "savedmodel",
                                                                   "tflite")]
    meta = json.loads((exports[0] / runs.EXPORT_FILE).read_text())
    assert meta["input"]["name"] == "chips"
    assert meta["input"]["shape"] == [None, 2, 150, 150, 3]
    assert meta["embedding"]["input"] == "chips" and meta["embedding"]["chip_size"] == 150
    assert "note" not in meta["embedding"]  # trained on the installed (keras) version
    assert meta["threshold"] == folder.info.threshold
    np.testing.assert_array_equal(np.load(exports[1] / runs.CENTROIDS_FILE),
                                  folder.info.centroids)

    chips = Predictor.load(exports[0]).chips(pictures)  # cut with dlib, here
    assert chips.shape == (13, 2, 150, 150, 3) and chips.dtype == np.uint8
    np.save(tmp_path / "chips.npy", chips)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_DLIB, str(tmp_path / "chips.npy"),
         *map(str, exports)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("dlib_loaded") is False
    for export in exports:
        got = found[str(export)]
        assert got["names"] == [f.name for f in expected], export.name
        np.testing.assert_allclose(got["scores"], [f.score for f in expected], atol=1e-4)
        np.testing.assert_allclose(got["features"], features, atol=1e-4)


def test_a_model_of_dlibs_own_vectors_loads_and_exports(
        fitted: tuple[Path, list[Image.Image]], tmp_path: Path) -> None:
    """A head recorded with the dlib backend's model version (the same weights) loads with the
    Keras network and says so in its export; another version is refused."""
    model, pictures = fitted
    expected = Predictor.load(model).outputs(pictures[:4])["logits"]
    old = Path(shutil.copytree(model, tmp_path / "old"))
    folder = dlib128.weights_dir()
    dlib_version = dlib128.model_version(folder, "dlib")
    assert dlib128.same_weights_versions(folder) == (
        dlib128.model_version(folder, "keras"), dlib_version)
    info = runs.read_run_info(old)
    assert info["embedding"]["model_version"] != dlib_version  # fit with the keras default
    info["embedding"]["model_version"] = dlib_version
    (old / runs.RUN_FILE).write_text(json.dumps(info))
    np.testing.assert_allclose(Predictor.load(old).outputs(pictures[:4])["logits"], expected,
                               atol=1e-5)
    meta = json.loads((export_run(old, "keras", tmp_path / "export") / runs.EXPORT_FILE)
                      .read_text())
    assert meta["embedding"]["model_version"] == dlib_version
    assert "the same weights" in meta["embedding"]["note"]

    info["embedding"]["model_version"] = "0" * 64
    (old / runs.RUN_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="train the head again"):
        Predictor.load(old)
