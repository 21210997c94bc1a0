"""dlib's descriptor network in float32 against bfloat16: speed, vectors and accuracy.

    python docs/examples/descriptor_precision.py ../shared/datasets/celeb21 --per-person 100

Cuts the aligned chips of the first ``--per-person`` crops of every person with at least that
many (dlib's landmarks, as every path that embeds), builds the Keras network twice (float32,
and Keras' ``mixed_bfloat16`` policy), times both on the same chips in alternating rounds
(batches of 32), and prints their throughput, how far the bfloat16 vectors are from the
float32 ones, and the leave-one-out nearest-neighbour accuracy (cosine) of each.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import keras
import numpy as np

from facefold.data.images import load_rgb, square_crop
from facefold.embeddings import dlib128, resnet
from facefold.machine import cpu_model, default_cache_dir

SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".webp", ".bmp")


def describe(model: keras.Model, chips: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([np.asarray(model(chips[i:i + batch], training=False), np.float32)
                           for i in range(0, len(chips), batch)])


def nearest_neighbour_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Share of chips whose most similar other chip (cosine) is of the same person."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -2.0)
    return float((labels[similarity.argmax(1)] == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-person", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    embedder = dlib128.Dlib128(backend="keras")
    chips, labels = [], []
    people = [p for p in sorted(args.folder.iterdir()) if p.is_dir()]
    kept = [files for files in (sorted(f for f in person.iterdir()
                                       if f.suffix.lower() in SUFFIXES) for person in people)
            if len(files) >= args.per_person]
    for label, files in enumerate(kept):
        for file in files[:args.per_person]:
            crop = square_crop(load_rgb(file.read_bytes(), str(file)), 112)
            chips.append(embedder.chip(np.asarray(crop))[0])
            labels.append(label)
    chips_array, label_array = np.stack(chips), np.array(labels)

    weights = dlib128.weights_dir() / dlib128.DESCRIPTOR_FILE
    networks = {"float32": resnet.load_descriptor(weights, default_cache_dir())}
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    networks["bfloat16"] = resnet.load_descriptor(weights, default_cache_dir())
    keras.mixed_precision.set_global_policy("float32")
    for network in networks.values():
        describe(network, chips_array[:32])  # traced before timing
    times: dict[str, list[float]] = {name: [] for name in networks}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, network in networks.items():
            start = time.perf_counter()
            vectors[name] = describe(network, chips_array)
            times[name].append(time.perf_counter() - start)

    print(f"CPU {cpu_model()}, load average {os.getloadavg()[0]:.1f}; {len(chips_array)} chips "
          f"of {len(set(labels))} people")
    for name, seconds in times.items():
        median = float(np.median(seconds))
        print(f"{name:>8}: {len(chips_array) / median:.0f} chips/s (median of rounds "
              f"{', '.join(f'{s:.2f}' for s in seconds)} s); leave-one-out nearest-neighbour "
              f"accuracy {nearest_neighbour_accuracy(vectors[name], label_array):.4f}")
    single, half = vectors["float32"], vectors["bfloat16"]
    cosine = (single * half).sum(1) / np.linalg.norm(single, axis=1) / np.linalg.norm(half, axis=1)
    print(f"bfloat16 against float32: max |diff| {np.abs(single - half).max():.4f}, "
          f"min cosine {cosine.min():.6f}")


if __name__ == "__main__":
    main()
