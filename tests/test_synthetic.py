"""Tests for the synthetic face generator (facefold.data.synthetic).

Everything here is small (a few people, tiny images) so the whole file runs in a
few seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefold.data.synthetic import (
    FaceIdentity,
    make_synthetic_faces,
    person_name,
    render_face,
    sample_identity,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path → file contents for every file under ``root``."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _load(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All images under ``root`` as float pixels in [0, 1] (N, H*W*3) and labels (N,)."""
    pixels, labels = [], []
    for label, person_dir in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for png in sorted(person_dir.glob("*.png")):
            with Image.open(png) as img:
                pixels.append(np.asarray(img, dtype=np.float64).ravel() / 255.0)
            labels.append(label)
    return np.stack(pixels), np.array(labels)


def test_same_arguments_give_byte_identical_files(tmp_path):
    a = make_synthetic_faces(tmp_path / "a", people=3, per_person=4, size=32, seed=7)
    b = make_synthetic_faces(tmp_path / "b", people=3, per_person=4, size=32, seed=7)
    files_a, files_b = _tree_bytes(a), _tree_bytes(b)
    assert len(files_a) == 12
    assert files_a == files_b


def test_images_do_not_depend_on_how_many_are_generated(tmp_path):
    # Each image has its own rng derived from (seed, person, image), so asking for
    # more people or more images must not change the ones that were there before.
    small = _tree_bytes(make_synthetic_faces(tmp_path / "s", people=2, per_person=3, size=24))
    large = _tree_bytes(make_synthetic_faces(tmp_path / "l", people=3, per_person=5, size=24))
    assert small
    assert all(large[name] == data for name, data in small.items())


def test_layout_counts_size_and_mode(tmp_path):
    out = tmp_path / "nested" / "deeper" / "faces"  # parents do not exist yet
    result = make_synthetic_faces(str(out), people=3, per_person=5, size=40, seed=1)

    assert isinstance(result, Path)
    assert result == out
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_00", "synthetic_01", "synthetic_02"]
    for person_dir in out.iterdir():
        # Only the final PNGs, no temp files left behind.
        names = sorted(p.name for p in person_dir.iterdir())
        assert names == [f"{i:04d}.png" for i in range(5)]
        for png in person_dir.iterdir():
            with Image.open(png) as img:
                assert img.format == "PNG"
                assert img.mode == "RGB"
                assert img.size == (40, 40)


def test_different_seeds_differ(tmp_path):
    a = _tree_bytes(make_synthetic_faces(tmp_path / "a", people=2, per_person=3, size=32, seed=0))
    b = _tree_bytes(make_synthetic_faces(tmp_path / "b", people=2, per_person=3, size=32, seed=1))
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_person_names_sort_in_person_order():
    assert person_name(0, 10) == "synthetic_00"
    assert person_name(7, 10) == "synthetic_07"
    assert person_name(5, 150) == "synthetic_005"
    names = [person_name(i, 150) for i in range(150)]
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"people": 1}, "people", "1"),
        ({"people": 0}, "people", "0"),
        ({"per_person": 0}, "per_person", "0"),
        ({"size": 15}, "size", "15"),
        ({"seed": -3}, "seed", "-3"),
        ({"people": 2.5}, "people", "2.5"),
        ({"size": "64"}, "size", "'64'"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(tmp_path, kwargs, name, value):
    with pytest.raises(ValueError, match=name) as excinfo:
        make_synthetic_faces(tmp_path / "out", **kwargs)
    assert value in str(excinfo.value)
    assert not (tmp_path / "out").exists()  # validated before anything is written


def test_render_face_returns_uint8_rgb_array():
    rng = np.random.default_rng(3)
    identity = sample_identity(rng)
    assert isinstance(identity, FaceIdentity)
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.jaw = 0.0  # type: ignore[misc]

    image = render_face(identity, rng, size=48)
    assert image.shape == (48, 48, 3)
    assert image.dtype == np.uint8
    # Not a blank canvas: a face plus a background spans a good part of the range.
    assert int(image.max()) - int(image.min()) > 80

    with pytest.raises(ValueError, match="size"):
        render_face(identity, rng, size=8)


def test_learnable_but_not_trivial(tmp_path):
    """A nearest-class-mean classifier on raw pixels beats chance clearly, but images
    of one person still vary a lot, so the task is not a lookup of one template."""
    people, per_person = 6, 20
    root = make_synthetic_faces(tmp_path, people=people, per_person=per_person, size=32, seed=0)
    x, y = _load(root)
    assert x.shape == (people * per_person, 32 * 32 * 3)

    # Even image indices train, odd ones test: half and half within every person.
    train = (np.arange(len(y)) % per_person) % 2 == 0
    means = np.stack([x[train & (y == c)].mean(axis=0) for c in range(people)])
    dist = ((x[~train, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
    accuracy = float((dist.argmin(axis=1) == y[~train]).mean())

    chance = 1.0 / people
    # Measured 0.57 for this seed (0.40–0.67 over seeds 0–4); chance is 0.17.
    assert accuracy > chance + 0.25, accuracy
    # A pixel template matcher must not be perfect: per-image variation matters.
    assert accuracy < 0.95, accuracy

    # Within-person variation: mean per-pixel std of one person's images (pixels in
    # [0, 1]). Measured 0.16–0.18; identical images would give 0.
    for c in range(people):
        within_std = float(x[y == c].std(axis=0).mean())
        assert within_std > 0.08, (c, within_std)
