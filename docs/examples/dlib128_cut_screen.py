"""Which top of dlib's network is worth fine-tuning: its fc alone, or its last residual block too?

``dlib128-ft`` caches the network's 256-d average pool and fine-tunes the 256→128 fc above
it. Cutting one block lower (before the last residual block, a 4×4×256 map per view) lets
the last block's two 3×3 convs and frozen batch norms learn as well. This screen trains both
on the same cached tensors, with the same recipe as the preset (1,000 steps of 128, CosFace
logits of scale 30 and margin 0.2 on the mean of the image's and its mirror's features, the
head at 1e-2 and the pretrained layers at 1/100 of it, cosine decay, the mirror drawn half
the time in training) and a frozen control (only the cosine head trains), on the given folds:

    python docs/examples/dlib128_cut_screen.py data/celeb21 --folds 0,1

It prints each variant's held-out accuracy per fold. A screen, not the preset: the 4×4×256
maps are kept in memory (106 MB for celeb21's 3,240 crops and their mirrors), not cached.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from facefold.data.records import list_shards, read_shard
from facefold.embeddings import dlib128
from facefold.models.cnn import CosineLogits

STEPS, BATCH, HEAD_LR, TOP_SCALE, SCALE, MARGIN = 1000, 128, 1e-2, 0.01, 30.0, 0.2


def cut_before_last_block(network: keras.Model) -> tuple[keras.Model, keras.Model]:
    """``(trunk, top)``: chips -> the input of the last residual block (B, 4, 4, 256), and
    that map -> the 128-d descriptor (the last block, the average pool and the fc)."""
    last_down = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)
                 and layer.strides == (2, 2)][-1]
    cut = last_down.input
    return keras.Model(network.input, cut), keras.Model(cut, network.output)


def shard_maps(data: str, model: dlib128.Dlib128, trunk: keras.Model
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shard: the trunk's maps of each record's two views (N, 2, 4, 4, 256), labels (N,)."""
    out = []
    for path in list_shards(data):
        records = list(read_shard(path))
        images = dlib128.decode_stored([(r.image_raw, str(path)) for r in records])
        views = [np.concatenate([trunk.predict(model.chips(images[i : i + 64], mirror)[0],
                                               verbose=0, batch_size=32)
                                 for i in range(0, len(images), 64)])
                 for mirror in (False, True)]
        out.append((np.stack(views, axis=1), np.array([r.label for r in records], np.int32)))
    return out


def top_variant(top: keras.Model, variant: str) -> tuple[keras.Model, list]:
    """A fresh copy of ``top`` and the variables the variant fine-tunes."""
    copy = keras.models.clone_model(top)
    copy.set_weights(top.get_weights())
    fc = copy.layers[-1]
    tuned = {"frozen": [], "fc": [fc.kernel], "block+fc": copy.trainable_variables}[variant]
    return copy, tuned


def run(maps: list, k: int, top: keras.Model, variant: str, classes: int, seed: int = 0
        ) -> float:
    """Train one variant on every shard but ``k``; its accuracy on shard ``k``."""
    x = np.concatenate([m for j, (m, _) in enumerate(maps) if j != k])
    y = np.concatenate([lab for j, (_, lab) in enumerate(maps) if j != k])
    model, tuned = top_variant(top, variant)
    head = CosineLogits(classes, SCALE, seed=seed)
    head.build((None, 128))
    schedule = keras.optimizers.schedules.CosineDecay(HEAD_LR, STEPS)
    head_opt = keras.optimizers.Adam(schedule)
    top_opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        HEAD_LR * TOP_SCALE, STEPS))
    rng = np.random.default_rng(seed)

    @tf.function
    def step(batch: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = head(model(batch, training=False))
            logits -= SCALE * MARGIN * tf.one_hot(labels, classes)  # CosFace
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, head.trainable_variables + tuned)
        n = len(head.trainable_variables)
        head_opt.apply(grads[:n], head.trainable_variables)
        if tuned:
            top_opt.apply(grads[n:], tuned)
        return loss

    for _ in range(STEPS):
        pick = rng.integers(0, len(x), BATCH)
        view = rng.integers(0, 2, BATCH)
        step(tf.constant(x[pick, view]), tf.constant(y[pick]))
    held, labels = maps[k]
    features = np.mean([model.predict(held[:, v], verbose=0, batch_size=256)
                        for v in (0, 1)], axis=0)
    return float((head(features).numpy().argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--folds", default="0,1")
    args = parser.parse_args()
    model = dlib128.load()
    trunk, top = cut_before_last_block(model.descriptor_network())
    started = time.perf_counter()
    maps = shard_maps(args.data, model, trunk)
    views = sum(2 * len(lab) for _, lab in maps)
    print(f"trunk maps {maps[0][0].shape[2:]}: {views} views in "
          f"{time.perf_counter() - started:.0f} s")
    classes = int(max(lab.max() for _, lab in maps)) + 1
    for k in map(int, args.folds.split(",")):
        for variant in ("frozen", "fc", "block+fc"):
            started = time.perf_counter()
            accuracy = run(maps, k, top, variant, classes)
            print(f"fold {k} {variant:9s} {accuracy:.4f} ({accuracy * len(maps[k][1]):.0f}/"
                  f"{len(maps[k][1])}), {(time.perf_counter() - started) / STEPS * 1e3:.1f} "
                  "ms/step", flush=True)


if __name__ == "__main__":
    main()
