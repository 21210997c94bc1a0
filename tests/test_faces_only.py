"""Faces only: noise, flat and gradient pictures are never named, verified or enrolled."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefold import runs
from facefold.cli import main
from facefold.predict import NoFaceError
from facefold.recognizer import Recognizer, identify_csv

pytest.importorskip("mtcnn")  # the check is the faces extra's detector
pytestmark = pytest.mark.real_face_check

from facefold.faces import plausible  # noqa: E402  (after the skip: it needs the extra)


def not_faces() -> dict[str, Image.Image]:
    """Pictures that are no face: noise, flat grey, white and black, gradients."""
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, 112), (112, 1)).astype(np.uint8)
    centre = np.hypot(*np.meshgrid(np.arange(112) - 56, np.arange(112) - 56))
    return {
        "noise": Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)),
        "grey noise": Image.fromarray(rng.integers(0, 256, (112, 112), dtype=np.uint8)),
        "grey": Image.new("RGB", (112, 112), (128, 128, 128)),
        "white": Image.new("RGB", (112, 112), (255, 255, 255)),
        "black": Image.new("RGB", (112, 112), (0, 0, 0)),
        "horizontal gradient": Image.fromarray(ramp),
        "vertical gradient": Image.fromarray(ramp.T.copy()),
        "radial gradient": Image.fromarray(np.clip(255 - centre * 3.2, 0, 255).astype(np.uint8)),
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("not-faces")
    paths = {}
    for name, image in not_faces().items():
        paths[name] = folder / f"{name.replace(' ', '-')}.png"
        image.save(paths[name])
    return paths


@pytest.mark.parametrize("name", list(not_faces()))
def test_non_faces_fail_the_check(name: str) -> None:
    problem = plausible.face_problem(not_faces()[name])
    assert problem is not None and "a face needs 0.50" in problem


def test_real_face_crops_pass(shared_dataset) -> None:
    """Crops of celeb21 (4 people x 3) and ORL (4 x 2) are faces (the full measurement:
    docs/deployment.md, "What is guaranteed")."""
    crops = []
    for name, people, each in (("celeb21", ["Tom_Hanks", "Tina_Fey", "Barack_Obama",
                                             "Halle_Berry"], 3),
                               ("orl", ["s1", "s7", "s20", "s33"], 2)):
        root = shared_dataset(name)
        for person in people:
            crops += sorted((root / person).iterdir())[:each]
    passed = [p.name for p in crops if plausible.face_problem(Image.open(p)) is None]
    assert len(passed) == len(crops) == 20


def test_noise_is_never_named(predictor, pictures: dict[str, Path]) -> None:
    """identify --crops (and the API) on noise: a row with face false and the file named,
    no name (before: a known person with a score above the threshold)."""
    recognizer = Recognizer(predictor)
    rows = recognizer.identify([pictures["noise"], pictures["grey"]], detect=False)
    assert [row["face"] for row in rows] == [False, False]
    assert all("name" not in row for row in rows)
    assert rows[0]["error"].startswith(f"{pictures['noise']}: no face in the picture")
    table = list(csv.DictReader(io.StringIO(identify_csv(rows))))
    assert [(r["face"], r["name"]) for r in table] == [("false", ""), ("false", "")]
    with pytest.raises(NoFaceError, match="no face"):
        predictor.recognize_photo(Image.open(pictures["noise"]), detect=True)


def test_verify_refuses_non_faces(predictor, pictures: dict[str, Path]) -> None:
    """Two noise pictures, and flat grey against white, were "same person"; now no answer,
    the file named (the CLI: status 2)."""
    recognizer = Recognizer(predictor)
    for a, b in (("noise", "grey noise"), ("grey", "white")):
        with pytest.raises(NoFaceError, match=str(pictures[a])):
            recognizer.verify(pictures[a], pictures[b], detect=False, threshold=0.0)


def test_cli_verify_exits_2_naming_the_file(predictor, pictures: dict[str, Path],
                                            capsys: pytest.CaptureFixture) -> None:
    status = main(["verify", str(predictor.info.source), str(pictures["grey"]),
                   str(pictures["white"]), "--crops", "--threshold", "0"])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"facefold: error: {pictures['grey']}: no face in the picture "
                           "(face detector confidence 0.")
    assert line.endswith("; a face needs 0.50)")


def test_noise_is_never_enrolled(predictor, pictures: dict[str, Path], tmp_path: Path) -> None:
    """Enrolling noise into a model that can enroll is refused before anything is written
    (before: enrolled, after which every noise upload was named)."""
    model = Path(shutil.copytree(predictor.info.source, tmp_path / "model"))
    features = predictor.outputs([Image.new("RGB", (40, 40))])["features"]
    runs.write_centroids(model, np.ones((len(predictor.labels), features.shape[1]), np.float32))
    recognizer = Recognizer.load(model)
    with pytest.raises(NoFaceError, match=str(pictures["noise"])):
        recognizer.enroll("noisy", [pictures["noise"]], detect=False)
    assert Recognizer.load(model).predictor.gallery_names == []


def test_without_the_detector_no_crop_is_named(predictor, pictures: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the faces extra nothing can confirm a face: "no face" saying what to install
    (serve: 422), never a name."""
    from facefold.faces import detect
    from facefold.predict import predictor as predictor_module

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("the face detector needs mtcnn: pip install 'facefold[faces]'")

    monkeypatch.setattr(detect, "detect_faces", missing)
    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)
    with pytest.raises(NoFaceError, match=r"cannot check .*pip install 'facefold\[faces\]'"):
        predictor.face_crops(Image.open(pictures["noise"]), detect=True)
