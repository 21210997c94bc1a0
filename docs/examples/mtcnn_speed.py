"""How long MTCNN takes in NumPy, as ``facefold.faces.detect`` runs it (one BLAS thread),
and, when the ``mtcnn`` package and TensorFlow are installed, by the package itself, on the
same pictures (docs/performance.md, "Start-up of the deploy commands"): a 1280×960 photo with
six faces pasted at 60 to 300 pixels (the largest side ``facefold.faces.detect`` searches at)
and a 112-pixel crop with the face check's margin (168 pixels). The faces are synthetic, or
celeb21's when its folder is given::

    python docs/examples/mtcnn_speed.py [../shared/datasets/celeb21] [--rounds 5]"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facefold.data.synthetic import render_face, sample_identity
from facefold.faces.detect import detect_faces
from facefold.faces.plausible import with_margin
from facefold.machine import describe

SIDES = (80, 150, 220, 300, 120, 60)  # pixels of the six pasted faces


def faces(celeb21: Path | None) -> list[Image.Image]:
    """Six 112-pixel face crops: the first of six celeb21 people, or synthetic ones."""
    if celeb21 is not None:
        people = sorted(p for p in celeb21.iterdir() if p.is_dir())[: len(SIDES)]
        return [Image.open(sorted(p.iterdir())[0]).convert("RGB") for p in people]
    rng = np.random.default_rng(0)
    return [Image.fromarray(render_face(sample_identity(rng), rng)) for _ in SIDES]


def photo(crops: list[Image.Image]) -> np.ndarray:
    canvas = Image.new("RGB", (1280, 960), (90, 110, 130))
    for i, (crop, side) in enumerate(zip(crops, SIDES, strict=True)):
        canvas.paste(crop.resize((side, side)), (40 + (i % 3) * 420, 40 + (i // 3) * 460))
    return np.asarray(canvas)


def timed(detect: Callable[[np.ndarray], list], pixels: np.ndarray, rounds: int) -> str:
    detect(pixels)  # the first call of each is not timed (TensorFlow traces its graphs)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        found = len(detect(pixels))
        seconds.append(time.perf_counter() - start)
    return (f"{statistics.median(seconds) * 1000:.0f} ms median "
            f"({min(seconds) * 1000:.0f}-{max(seconds) * 1000:.0f}), {found} face(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("celeb21", type=Path, nargs="?", help="celeb21 folder (default: synthetic)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    crops = faces(args.celeb21)
    pictures = {"1280x960 photo": photo(crops),
                "168-pixel crop with margin": np.asarray(with_margin(crops[0]))}
    print(describe(), f"load average {os.getloadavg()[0]:.2f}")
    # NumPy first: once TensorFlow has run in the process, its idle threads slow NumPy's
    # small products (a crop took 40 ms instead of 10).
    def ours(pixels: np.ndarray) -> list:  # as facefold runs it: one BLAS thread
        return detect_faces(Image.fromarray(pixels), min_score=0.8)  # the package's default

    for name, pixels in pictures.items():
        print(f"{name}, NumPy: {timed(ours, pixels, args.rounds)}")
    try:
        from mtcnn import MTCNN  # starts TensorFlow
    except ModuleNotFoundError:
        print("(the mtcnn package or TensorFlow is not installed: NumPy only)")
    else:
        package = MTCNN(stages="face_and_landmarks_detection", device="CPU:0")

        def theirs(pixels: np.ndarray) -> np.ndarray:
            return package.detect_faces(pixels, box_format="xyxy", output_type="numpy")

        for name, pixels in pictures.items():
            print(f"{name}, the mtcnn package on TensorFlow: {timed(theirs, pixels, args.rounds)}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
