"""Near-duplicate pictures: perceptual hashes and the pairs within a Hamming distance.

The dataset builder drops near-duplicates with these functions and the
inspector refuses a dataset whose near-duplicates sit in two shards, so both
hash exactly the same thing: the JPEG crop as stored in a shard.

Why a 256-bit pHash (``imagehash.phash`` with ``hash_size=16``) and not the
usual 64-bit one: on face crops, which alignment makes alike in their low
frequencies, 64 bits cannot tell an edited copy from another photo. Measured
on face crops: edited copies of a picture (re-saved, brightened, contrasted,
halved) lie as close in 64 bits as different shots of one sitting and even
different people do, while 256 bits keep the edits near and the others far
(the distances measured on ORL and celeb21: docs/data.md, "Near-duplicates").
Hence :data:`DEFAULT_DISTANCE` = 16 of 256, the same fraction of bits (1/16)
as the common "4 of 64" rule, on a finer hash.
"""

from __future__ import annotations

import io

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 16  # imagehash's side of the low-frequency DCT block: 16×16 = 256 bits
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_NAME = f"imagehash.phash hash_size={HASH_SIZE} ({HASH_BITS} bits)"
DEFAULT_DISTANCE = 16  # see the module docstring for the measurements behind it

# Elements of one (rows, columns, words) XOR block: about 32 MB of uint64 at a time.
_BLOCK_ELEMENTS = 1 << 22


def phash(img: Image.Image) -> np.ndarray:
    """The 256-bit perceptual hash of a picture as 4 uint64 words (shape ``(4,)``)."""
    bits = imagehash.phash(img, hash_size=HASH_SIZE).hash.ravel()  # (256,) bool
    return np.packbits(bits).view(np.uint64)  # bit order is irrelevant to distances


def phash_jpeg(raw: bytes) -> np.ndarray:
    """:func:`phash` of JPEG bytes, decoded the way the inspector decodes a shard's record."""
    with Image.open(io.BytesIO(raw)) as img:
        img.load()
        return phash(img)


def check_distance(max_distance: int, name: str = "near_duplicates") -> int:
    """``max_distance`` if it is an int in 0..256, else ``ValueError`` naming ``name``."""
    if isinstance(max_distance, bool) or not isinstance(max_distance, int | np.integer):
        raise ValueError(f"{name} must be a whole number of bits, got {max_distance!r}")
    if not 0 <= max_distance <= HASH_BITS:
        raise ValueError(
            f"{name} must be in 0..{HASH_BITS} (Hamming distance between {HASH_BITS}-bit "
            f"pHashes; 0 disables), got {max_distance}"
        )
    return int(max_distance)


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair of hashes at most ``max_distance`` bits apart.

    ``hashes`` is ``(N, words)`` uint64 (rows from :func:`phash`). Returns an
    ``(M, 3)`` int64 array of ``(i, j, distance)`` with ``i < j``, sorted by
    ``j`` then ``i``. The N²/2 comparisons are a vectorized XOR and popcount
    in blocks of rows (10,000 hashes take a few seconds), never a Python loop
    over pairs.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if hashes.ndim != 2:
        raise ValueError(f"hashes must be (N, words) uint64, got shape {hashes.shape}")
    n, words = hashes.shape
    found: list[np.ndarray] = []
    rows = max(1, _BLOCK_ELEMENTS // max(1, n * words))
    for start in range(0, n - 1, rows):
        block = hashes[start : start + rows]  # (r, words)
        later = hashes[start + 1 :]  # row start+r is compared with columns after it only
        distance = np.bitwise_count(block[:, None, :] ^ later[None, :, :]).sum(axis=-1)  # (r, n')
        r, c = np.nonzero(distance <= max_distance)
        keep = c >= r  # column c is hash start+1+c; it must come after row start+r
        i, j = start + r[keep], start + 1 + c[keep]
        found.append(np.stack([i, j, distance[r[keep], c[keep]]], axis=1))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]


def first_of_each_group(hashes: np.ndarray, max_distance: int) -> dict[int, tuple[int, int]]:
    """Which pictures to drop so no two kept ones are within ``max_distance``.

    Greedy in input order: a picture is dropped when an earlier *kept*
    picture is near it, so the first of every group stays. Returns
    ``{dropped index: (kept index it is nearest to, distance)}``; ties go to
    the earlier kept picture.
    """
    pairs = near_pairs(hashes, max_distance)
    # Sorted by (j, distance, i): the first usable pair of each j is its nearest kept picture.
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 2], pairs[:, 1]))]
    dropped: dict[int, tuple[int, int]] = {}
    for i, j, distance in pairs.tolist():
        # Every i < j was decided before j came up, so "i is kept" is final here.
        if j not in dropped and i not in dropped:
            dropped[j] = (i, distance)
    return dropped
