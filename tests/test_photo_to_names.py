"""The whole recognize story on real faces: ORL photos -> aligned crops -> shards -> model,
then a new group photo -> boxes -> the right names.

Needs ``../shared/datasets/orl`` and the ``faces`` extra (MTCNN); skips without them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import shared_dataset_path
from PIL import Image

from facefold.data.build import build_dataset
from facefold.models.presets import resolve_config
from facefold.predict import Predictor, load_detector
from facefold.train import train

PEOPLE = [f"s{i}" for i in range(1, 9)]
TRAINING_PHOTOS = range(1, 10)  # photo 10 of every person is never seen in training
SCALE, GAP = 1.6, 30


def group_photo(orl: Path, people: list[str]) -> tuple[Image.Image, list[tuple[int, int]]]:
    """Photo 10 of each person, enlarged, side by side; returns the photo and each face's x-span."""
    faces = [Image.open(orl / person / "10.pgm").convert("RGB") for person in people]
    faces = [f.resize((round(f.width * SCALE), round(f.height * SCALE))) for f in faces]
    photo = Image.new("RGB", (sum(f.width + GAP for f in faces) + GAP,
                              max(f.height for f in faces) + 2 * GAP), (214, 222, 230))
    spans, x = [], GAP
    for face in faces:
        photo.paste(face, (x, GAP))
        spans.append((x, x + face.width))
        x += face.width + GAP
    return photo, spans


@pytest.mark.slow
def test_orl_photos_to_named_faces(tmp_path: Path) -> None:
    orl = shared_dataset_path("orl")
    if load_detector() is None:
        pytest.skip("the faces extra (mtcnn) is not installed")
    from facefold.faces.crop import crop_faces

    photos = tmp_path / "photos"
    for person in PEOPLE:
        (photos / person).mkdir(parents=True)
        for n in TRAINING_PHOTOS:
            shutil.copy(orl / person / f"{n}.pgm", photos / person)
    report = crop_faces(photos, tmp_path / "crops", log=lambda _: None)
    assert report["crops_written"] >= len(PEOPLE) * 8  # MTCNN finds (nearly) every ORL face
    build_dataset(tmp_path / "crops", tmp_path / "data", shards=2, per_class=8, size=112,
                  near_duplicates=0, log=lambda _: None)
    config = resolve_config("size32", overrides={"train": {
        "steps": 240, "eval_every": 120, "batch_size": 32, "precision": "float32",
        "sparsity_every": 0}})
    rows = train(tmp_path / "data", config, tmp_path / "run", [0], log=lambda _: None)
    assert rows[-1]["eval_accuracy"] >= 0.75  # 8 people: chance is 0.125

    people = ["s2", "s5", "s7"]
    photo, spans = group_photo(orl, people)
    faces = Predictor.load(tmp_path / "run").recognize_photo(photo, top_k=3)
    assert len(faces) == len(people)
    named = {}
    for face in faces:
        centre = face.box[0] + face.box[2] / 2
        slot = [i for i, (left, right) in enumerate(spans) if left <= centre <= right]
        assert len(slot) == 1, f"box {face.box} is not on one pasted face"
        named[people[slot[0]]] = face.name
    assert sorted(named) == sorted(people)  # one box per pasted face
    right = sum(named[p] == p for p in people)
    assert right >= 2, f"named {named}"
