"""The dlib128 descriptor of face crops by the Keras network against dlib's own.

    python docs/examples/dlib128_keras_vs_dlib.py ../shared/datasets/celeb21 --crops 200

Takes every n-th picture of FOLDER (one sub-folder per person) so that ``--crops`` of them
spread over all people, squares each to 112 pixels as ``dataset build`` stores it, and
embeds them (and their mirrors with ``--mirror``) with both backends of
:class:`facefold.embeddings.dlib128.Dlib128` — the same landmarks and chips, two descriptor
networks. Prints the largest absolute difference of a component, the smallest cosine
similarity, and the seconds each backend took. dlib's descriptor takes ~150 ms a crop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from facefold.data.images import load_rgb, square_crop
from facefold.embeddings.dlib128 import Dlib128

SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".webp", ".bmp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--mirror", action="store_true", help="the mirrors too")
    args = parser.parse_args()
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    files = files[:: max(1, len(files) // args.crops)][: args.crops]
    images = np.stack([np.asarray(square_crop(load_rgb(p.read_bytes(), str(p)), 112))
                       for p in files])
    vectors = {}
    for backend in ("keras", "dlib"):
        model = Dlib128(backend)
        model.embed(images[:2])  # warm-up
        started = time.perf_counter()
        views = [model.embed(images, mirror=m) for m in ([False, True] if args.mirror
                                                         else [False])]
        print(f"{backend}: {len(images) * len(views)} views in "
              f"{time.perf_counter() - started:.1f} s")
        vectors[backend] = np.concatenate([v for v, _ in views])
        fallback = np.concatenate([f for _, f in views])
    a, b = vectors["keras"], vectors["dlib"]
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"{len(a)} views of {len(files)} crops ({int(fallback.sum())} landmark fallbacks): "
          f"max abs diff {np.abs(a - b).max():.2e}, min cosine {cosine.min():.8f}, "
          f"largest |component| {np.abs(b).max():.3f}")


if __name__ == "__main__":
    main()
