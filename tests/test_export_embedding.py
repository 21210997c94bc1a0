"""One-file exports of a real dlib128 model and of an ensemble with it: chips in, names out,
with TensorFlow alone.

A ``dlib128`` model fit on five ORL people is exported in every format; the export holds
dlib's network (in Keras) and the head, and takes each face's aligned chip and its mirror's.
The chips of every test picture are cut here (with dlib), and the exports name them in a
subprocess where ``import dlib`` fails: the names and scores must be the model folder's for
the same pictures. A model recorded with dlib's own descriptor (the ``dlib`` backend's model
version, the same weights) still loads and exports.

The ``ensemble`` preset (fast + dlib128) fit on the same people is exported the same way, as
one file taking ``image`` and ``chips``; a copy given member weights checks a weighted
ensemble's export, and an export in the layout before one-file ensembles (an export of each
member in ``members/<preset>``) still loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
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

found = {}
for inputs_file, folder in zip(sys.argv[1::2], sys.argv[2::2]):
    inputs = np.load(inputs_file)  # the chips, or an ensemble's inputs by name
    if not isinstance(inputs, np.ndarray):
        inputs = dict(inputs)
    predictor = Predictor.load(folder)
    faces = predictor.recognize_model_inputs(inputs, top_k=1)
    found[folder] = {"names": [f.name for f in faces], "scores": [f.score for f in faces],
                     "features": predictor.outputs_for_model_inputs(inputs)["features"].tolist()}
found["dlib_loaded"] = any(m.split(".")[0] == "dlib" for m in sys.modules)
print(json.dumps(found))
"""


def fit_orl(root: Path, preset: str, people: Sequence[str] = PEOPLE,
            stranger: str = STRANGER) -> tuple[Path, list[Image.Image], list[str]]:
    """``(model, pictures, people)``: ``preset`` fit in ``root`` on 8 photos of each of 5 ORL
    ``people`` (the real embedding), the pictures it never saw (their other 2 photos, then a
    ``stranger``'s 3) and the person of each (the stranger's folder name last)."""
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    orl = shared_dataset_path("orl")
    from facefold.data.build import build_dataset
    from facefold.fitting import fit

    faces = root / "faces"
    for person in people:
        shutil.copytree(orl / person, faces / person)
    quiet = {"log": lambda _: None}
    build_dataset(faces, root / "data", shards=2, per_class=8, near_duplicates=0,
                  spare=root / "spare", **quiet)
    config = resolve_config(preset).replace(
        train={"steps": 300, "eval_every": 300, "batch_size": 8})
    fit(root / "data", config, root / "model", groups=2, far=0.2, **quiet)
    files = sorted(p for p in (root / "spare").rglob("*") if p.is_file())
    files += sorted((orl / stranger).glob("*.pgm"))[:3]
    return (root / "model", [Image.open(p).convert("RGB") for p in files],
            [p.parent.name for p in files])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Image.Image]]:
    """``(model, pictures)`` of :func:`fit_orl` with dlib128."""
    model, pictures, _ = fit_orl(tmp_path_factory.mktemp("export-embedding"), "dlib128")
    return model, pictures


@pytest.fixture(scope="module")
def fitted_ensemble(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Image.Image]]:
    """``(model, pictures)`` of :func:`fit_orl` with the ``ensemble`` preset (fast +
    dlib128)."""
    model, pictures, _ = fit_orl(tmp_path_factory.mktemp("export-ensemble"), "ensemble")
    return model, pictures


def _names_without_dlib(exports: dict[Path, np.ndarray | dict[str, np.ndarray]],
                        scratch: Path) -> dict:
    """Each export (folder -> the model inputs of the test pictures) names its inputs in one
    subprocess where dlib cannot be imported: ``{str(folder): names, scores, features}``."""
    args = []
    for k, (folder, inputs) in enumerate(exports.items()):
        path = scratch / f"inputs-{k}.{'npz' if isinstance(inputs, dict) else 'npy'}"
        if isinstance(inputs, dict):
            np.savez(path, **inputs)
        else:
            np.save(path, inputs)
        args += [str(path), str(folder)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", WITHOUT_DLIB, *args], capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("dlib_loaded") is False
    return found


def _assert_named_as(got: dict, expected: list, features: np.ndarray, where: str) -> None:
    assert got["names"] == [f.name for f in expected], where
    np.testing.assert_allclose(got["scores"], [f.score for f in expected], atol=1e-4,
                               err_msg=where)
    np.testing.assert_allclose(got["features"], features, atol=1e-4, err_msg=where)


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
    found = _names_without_dlib({export: chips for export in exports}, tmp_path)
    for export in exports:
        _assert_named_as(found[str(export)], expected, features, export.name)


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


def _weighted_copy(model: Path, out: Path, weights: dict[str, float]) -> Path:
    """A copy of an ensemble ``model`` whose ``ensemble.json`` gives its members ``weights``
    (a weighted ensemble as a weighted fit records it, without fitting one more)."""
    copy = Path(shutil.copytree(model, out))
    record = json.loads((copy / runs.ENSEMBLE_FILE).read_text())
    for entry in record["members"]:
        entry["weight"] = weights[entry["preset"]]
    (copy / runs.ENSEMBLE_FILE).write_text(json.dumps(record))
    return copy


@pytest.mark.slow
def test_ensemble_exports_are_one_file_naming_without_dlib_as_the_model_folder(
        fitted_ensemble: tuple[Path, list[Image.Image]], tmp_path: Path) -> None:
    model, pictures = fitted_ensemble
    weighted = _weighted_copy(model, tmp_path / "weighted", {"fast": 0.3, "dlib128": 0.7})
    expected, exports = {}, {}
    for run in (model, weighted):
        folder = Predictor.load(run)
        faces = folder.recognize(pictures, top_k=1)
        expected[run] = faces, folder.outputs(pictures)["features"]
        formats = ("keras", "savedmodel", "tflite") if run == model else ("savedmodel",)
        exports[run] = [export_run(run, fmt, tmp_path / f"{run.name}-{fmt}") for fmt in formats]
    assert len({f.name for f in expected[model][0]} - {"unknown"}) >= 3  # it names people
    assert Predictor.load(weighted).member_weights == {"fast": 0.3, "dlib128": 0.7}
    assert not np.allclose(expected[weighted][1], expected[model][1], atol=1e-3)

    for fmt, export in zip(("keras", "savedmodel", "tflite"), exports[model], strict=True):
        assert sorted(p.name for p in export.iterdir()) == sorted(
            [runs.CENTROIDS_FILE, runs.PICTURES_FILE, runs.EXPORT_FILE,
             runs.MODEL_FILES[fmt]])  # no members/
    meta = json.loads((exports[model][0] / runs.EXPORT_FILE).read_text())
    assert (meta["family"], meta["model_file"], meta["embedding"]) == (
        "ensemble", "model.keras", None)
    assert [(i["name"], i["dtype"], i["shape"], i["members"]) for i in meta["inputs"]] == [
        ("image", "uint8", [None, 112, 112, 3], ["fast"]),
        ("chips", "uint8", [None, 2, 150, 150, 3], ["dlib128"])]
    members = meta["ensemble"]["members"]
    assert [(m["preset"], m["family"], m["input"]) for m in members] == [
        ("fast", "cnn", "image"), ("dlib128", "embedding", "chips")]
    assert members[1]["embedding"]["chip_size"] == 150 and members[0]["embedding"] is None
    assert all("weight" not in m for m in members)
    assert meta["threshold"] == Predictor.load(model).info.threshold
    np.testing.assert_array_equal(np.load(exports[model][1] / runs.CENTROIDS_FILE),
                                  Predictor.load(model).info.centroids)
    weighted_meta = json.loads((exports[weighted][0] / runs.EXPORT_FILE).read_text())
    assert {m["preset"]: m["weight"] for m in weighted_meta["ensemble"]["members"]} == {
        "fast": 0.3, "dlib128": 0.7}

    loaded = Predictor.load(exports[model][0])
    inputs = loaded.model_inputs(pictures)  # the chips cut with dlib, here
    np.testing.assert_array_equal(inputs["image"], loaded.to_arrays(pictures))
    assert inputs["chips"].shape == (13, 2, 150, 150, 3) and inputs["chips"].dtype == np.uint8
    found = _names_without_dlib({e: inputs for run in exports for e in exports[run]}, tmp_path)
    for run, folders in exports.items():
        for export in folders:
            _assert_named_as(found[str(export)], *expected[run], export.name)


@pytest.mark.slow
def test_an_ensemble_export_of_member_exports_still_loads(
        fitted_ensemble: tuple[Path, list[Image.Image]], tmp_path: Path) -> None:
    """The layout before one-file ensembles, as facefold wrote it: an export of each member
    in ``members/<preset>/``, ``model_file`` null, each member's weight in its entry."""
    model, pictures = fitted_ensemble
    weights = {"fast": 0.3, "dlib128": 0.7}
    weighted = _weighted_copy(model, tmp_path / "weighted", weights)
    folder = Predictor.load(weighted)
    old = tmp_path / "old"
    entries = []
    for preset, member in folder.members.items():
        export_run(member.info.source, "savedmodel", old / "members" / preset)
        entries.append({"preset": preset, "export": f"members/{preset}",
                        "source_run": str(member.info.source), "weight": weights[preset]})
    meta = json.loads((export_run(weighted, "savedmodel", tmp_path / "new")
                       / runs.EXPORT_FILE).read_text())
    meta.pop("inputs")
    meta.update(model_file=None, input={"name": "image", "dtype": "uint8",
                                        "shape": [None, 112, 112, 3]},
                ensemble={"members": entries})
    (old / runs.EXPORT_FILE).write_text(json.dumps(meta))
    shutil.copy(weighted / runs.CENTROIDS_FILE, old / runs.CENTROIDS_FILE)
    shutil.copy(weighted / runs.PICTURES_FILE, old / runs.PICTURES_FILE)  # its nearest score

    loaded = Predictor.load(old)
    assert sorted(loaded.members) == ["dlib128", "fast"] and loaded.member_weights == weights
    expected = folder.recognize(pictures, top_k=1)
    got = loaded.recognize(pictures, top_k=1)
    assert [f.name for f in got] == [f.name for f in expected]
    np.testing.assert_allclose([f.score for f in got], [f.score for f in expected], atol=1e-4)
    inputs = loaded.model_inputs(pictures)  # by member, as its members take them
    assert sorted(inputs) == ["dlib128", "fast"] and inputs["dlib128"].shape[1:] == (
        2, 150, 150, 3)
    np.testing.assert_allclose(loaded.outputs_for_model_inputs(inputs)["features"],
                               folder.outputs(pictures)["features"], atol=1e-4)
