"""How real face crops and non-faces fare in the face check (docs/deployment.md, "What is
guaranteed"): the detector's best confidence (facefold.faces.plausible.face_score) on every
picture of each crop tree given (one sub-folder per person) and on pictures that are no face
(uniform, Gaussian and grey noise, flat colours, gradients, blurred blobs), and the share of
each that passes at facefold.faces.plausible.MIN_SCORE::

    python docs/examples/face_check.py ../shared/datasets/celeb21 ../shared/datasets/orl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from facefold.data.images import load_rgb
from facefold.faces import plausible
from facefold.machine import describe


def not_faces(seed: int = 0) -> dict[str, Image.Image]:
    """240 pictures that are no face, 112 px square."""
    rng = np.random.default_rng(seed)
    found: dict[str, Image.Image] = {}
    for i in range(100):
        found[f"uniform noise {i}"] = Image.fromarray(
            rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    for i in range(50):
        found[f"gaussian noise {i}"] = Image.fromarray(
            np.clip(rng.normal(128, 40, (112, 112, 3)), 0, 255).astype(np.uint8))
    for i in range(30):
        found[f"grey noise {i}"] = Image.fromarray(
            rng.integers(0, 256, (112, 112), dtype=np.uint8)).convert("RGB")
    for value in range(0, 256, 15):
        found[f"flat {value}"] = Image.new("RGB", (112, 112), (value,) * 3)
    for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 150, 120)):
        found[f"flat {colour}"] = Image.new("RGB", (112, 112), colour)
    x = np.linspace(0, 255, 112)
    ramps = {"horizontal": np.tile(x, (112, 1)), "vertical": np.tile(x[:, None], (1, 112)),
             "diagonal": np.add.outer(x, x) / 2,
             "radial": np.clip(np.hypot(*np.meshgrid(x - 128, x - 128)) * 1.4, 0, 255)}
    for name, ramp in ramps.items():
        for inverted in (False, True):
            pixels = (255 - ramp if inverted else ramp).astype(np.uint8)
            found[f"{name} gradient{' inverted' if inverted else ''}"] = Image.fromarray(
                pixels).convert("RGB")
    for i in range(30):
        found[f"blobs {i}"] = Image.fromarray(
            rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((112, 112),
                                                                    Image.Resampling.BICUBIC)
    return found


def summary(name: str, scores: dict[str, float], seconds: float) -> str:
    values = np.array(list(scores.values()))
    passed = int((values >= plausible.MIN_SCORE).sum())
    lowest = min(scores, key=scores.get)
    return (f"{name}: {passed} of {len(values)} pass ({passed / len(values):.2%}); lowest "
            f"{values.min():.3f} ({lowest}), highest {values.max():.3f}; "
            f"{1000 * seconds / len(values):.0f} ms a picture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="crop folders, one sub-folder a person")
    args = parser.parse_args()
    print(describe())
    for tree in args.trees:
        files = sorted(p for person in sorted(tree.iterdir()) if person.is_dir()
                       for p in person.iterdir() if p.is_file() and not p.name.startswith("."))
        started = time.perf_counter()
        scores = {str(p): plausible.face_score(load_rgb(p)) for p in files}
        print(summary(str(tree), scores, time.perf_counter() - started))
    started = time.perf_counter()
    scores = {name: plausible.face_score(image) for name, image in not_faces().items()}
    print(summary("not faces", scores, time.perf_counter() - started))


if __name__ == "__main__":
    main()
