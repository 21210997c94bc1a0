"""Perceptual-hash distances of edited copies and of other pictures (docs/data.md, Near-duplicates).

For every person folder of a crop tree: the 256-bit pHash distance of every pair of that
person's pictures, and of 25 of their pictures (drawn with seed 0) to four edited copies each
(re-saved at JPEG quality 75, brightened ×1.15, contrasted ×1.2, halved and enlarged back)::

    python docs/examples/neardup_distances.py CROPS
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from facefold.data import neardup

EDITED_PER_PERSON = 25


def edited_copies(img: Image.Image) -> list[Image.Image]:
    """The four edits a copy of a picture may have gone through."""
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=75)
    halved = img.resize((img.width // 2, img.height // 2)).resize(img.size)
    return [Image.open(buffer), ImageEnhance.Brightness(img).enhance(1.15),
            ImageEnhance.Contrast(img).enhance(1.2), halved]


def distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.bitwise_count(a ^ b).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crops", type=Path, help="one folder of face crops per person")
    root = parser.parse_args().crops
    rng = np.random.default_rng(0)
    edits, pairs = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.is_file())
        images = {f: Image.open(f).convert("RGB") for f in files}
        hashes = np.stack([neardup.phash(images[f]) for f in files])
        pairs += neardup.near_pairs(hashes, neardup.HASH_BITS + 1)[:, 2].tolist()
        for f in rng.choice(files, size=min(EDITED_PER_PERSON, len(files)), replace=False):
            original = neardup.phash(images[f])
            edits += [distance(original, neardup.phash(e)) for e in edited_copies(images[f])]
    edits_at, pairs_at = np.array(edits), np.array(pairs)
    bound = neardup.DEFAULT_DISTANCE
    print(f"edited copies: {len(edits_at)}, below {bound} bits: {(edits_at < bound).sum()}, "
          f"at {bound}: {(edits_at == bound).sum()}, above: {(edits_at > bound).sum()} "
          f"(max {edits_at.max()})")
    print(f"pairs of one person's pictures: {len(pairs_at)}, below {bound} bits: "
          f"{(pairs_at < bound).sum()}, at {bound}: {(pairs_at == bound).sum()}")


if __name__ == "__main__":
    main()
