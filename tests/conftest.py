"""Fixtures shared by the test files: tiny image trees and the real data in ../shared."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# One oneDNN setting for every test process on every machine (TensorFlow's own default depends
# on the CPU), so that a test CLI in a subprocess never stops to time both settings.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# ../shared/datasets beside the project: real face data, never copied into the repo.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# (suffix, Pillow format, mode): the image tree cycles through these so every
# reader path (JPEG, transparent PNG, grayscale PGM, WebP, palette BMP) is exercised.
IMAGE_FORMATS = [
    (".jpg", "JPEG", "RGB"),
    (".png", "PNG", "RGBA"),
    (".pgm", "PPM", "L"),
    (".webp", "WEBP", "RGB"),
    (".bmp", "BMP", "P"),
]


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache (embeddings, precision choices) of the whole test session: a temporary
    folder, never the developer's ``~/.cache/facefold``."""
    folder = tmp_path_factory.mktemp("user-cache")
    before = os.environ.get("FACEFOLD_CACHE")
    os.environ["FACEFOLD_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FACEFOLD_CACHE", None)
    else:
        os.environ["FACEFOLD_CACHE"] = before


@pytest.fixture(autouse=True)
def synthetic_faces_pass(request: pytest.FixtureRequest) -> Iterator[None]:
    """Most tests name synthetic pictures (coloured blocks, noise) that the face check of
    :mod:`facefold.faces.plausible` rightly refuses as no face: for them every picture passes.
    Tests marked ``real_face_check`` (tests/test_faces_only.py) run the real check. A patch of
    its own, so that a test's ``monkeypatch.undo()`` leaves it in place."""
    if "real_face_check" in request.keywords:
        yield
        return
    from facefold.faces import plausible

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plausible, "face_problem", lambda image: None)
        yield


def shared_dataset_path(name: str) -> Path:
    """``../shared/datasets/<name>``, or skip the calling test when it is not there."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is not present")
    return path


@pytest.fixture
def shared_dataset() -> Callable[[str], Path]:
    """``shared_dataset("orl")`` -> the folder, skipping the test when it is absent."""
    return shared_dataset_path


def noise_image(rng: np.random.Generator, size: tuple[int, int] = (40, 50)) -> Image.Image:
    """A random RGB picture ``size`` = (width, height); no two are alike."""
    width, height = size
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def write_image(path: Path, img: Image.Image, fmt: str, mode: str) -> Path:
    """Save ``img`` converted to ``mode`` in Pillow format ``fmt``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert(mode).save(path, format=fmt)
    return path


def write_image_tree(
    root: Path, people: dict[str, int], size: tuple[int, int] = (40, 50), seed: int = 0
) -> dict[str, list[Path]]:
    """Write ``root/<person>/NN.<ext>`` noise pictures, cycling through :data:`IMAGE_FORMATS`.

    ``people`` maps a name to its number of pictures (0 makes an empty folder).
    Returns the files written per person, sorted by name.
    """
    rng = np.random.default_rng(seed)
    tree: dict[str, list[Path]] = {}
    for name, count in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        tree[name] = []
        for i in range(count):
            suffix, fmt, mode = IMAGE_FORMATS[i % len(IMAGE_FORMATS)]
            path = root / name / f"{i:02d}{suffix}"
            tree[name].append(write_image(path, noise_image(rng, size), fmt, mode))
    return tree


@pytest.fixture
def image_tree(tmp_path: Path) -> Callable[..., dict[str, list[Path]]]:
    """``image_tree({"alice": 5, "bob": 5})`` writes a tree under ``tmp_path / "src"``."""

    def make(people: dict[str, int], **kwargs) -> dict[str, list[Path]]:
        return write_image_tree(tmp_path / "src", people, **kwargs)

    return make


def class_pattern(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) uint8 picture whose class shows as a bright block at a class-given spot."""
    image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    cells = 3
    cell = size // cells
    row, col = divmod(label % (cells * cells), cells)
    image[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell, label % 3] = 230
    return image


def write_2016_shard(path: Path, examples: list[tuple[int, np.ndarray]]) -> None:
    """Write a shard exactly as the 2016 code did: plain TFRecordWriter, only label + image_raw."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for label, image in examples:
            jpeg = tf.io.encode_jpeg(image, quality=95).numpy()
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                        "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    }
                )
            )
            writer.write(example.SerializeToString())


def make_tiny_dataset(
    out: Path, classes: int = 4, shards: int = 3, per_shard: int = 8, size: int = 40, seed: int = 0
) -> Path:
    """A small learnable dataset in the 2016 format (shards + labels.txt, no manifest)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        examples = [
            (label, class_pattern(label, rng, size))
            for label in range(classes)
            for _ in range(per_shard)
        ]
        order = rng.permutation(len(examples))
        write_2016_shard(out / f"data-{shard:02d}.tfrecords", [examples[i] for i in order])
    (out / "labels.txt").write_text("".join(f"person_{c}\n" for c in range(classes)))
    return out


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 4-person, 3-shard, 40x40 dataset written the 2016 way."""
    return make_tiny_dataset(tmp_path / "tiny")


def tiny_config(steps: int = 30, eval_every: int = 15, preset: str = "seed", **train):
    """A preset's architecture (default: seed) on 32x32 crops, float32, a few steps: fast
    enough for tests. ``train`` overrides more [train] keys."""
    from facefold.models.presets import resolve_config

    return resolve_config(
        preset,
        overrides={
            "model": {"crop_size": 32, "input_size": 32},
            "train": {"steps": steps, "eval_every": eval_every, "batch_size": 16,
                      "precision": "float32", **train},
        },
    )


@pytest.fixture(scope="session")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    """A :class:`facefold.predict.Predictor` of a tiny run, shared by the test session: the
    serve, hostile-upload and browser tests only read it (none enrolls), and training one per
    module cost 5 s each."""
    from facefold.predict import Predictor
    from facefold.train import train

    root = tmp_path_factory.mktemp("predictor")
    data = make_tiny_dataset(root / "data")
    train(data, tiny_config(steps=20, eval_every=20, sparsity_every=0), root / "run", [0],
          log=lambda _: None)
    return Predictor.load(root / "run")


class FakeEmbedder:
    """Stands in for :class:`facefold.embeddings.dlib128.Dlib128` without dlib: a fixed random
    projection of each image's 2x2 mean colours (so a tiny dataset's classes separate).

    ``calls`` counts the images embedded; ``fallback_below`` marks images whose mean is
    under it as landmark fallbacks; ``version`` is the model version.
    """

    name = "dlib128"
    dim = 128

    def __init__(self, version: str = "fake-1", fallback_below: float = -1.0) -> None:
        self.version = version
        self.fallback_below = fallback_below
        self.calls = 0
        self.projection = np.random.default_rng(0).normal(size=(12, self.dim)).astype("float32")

    @property
    def equivalent_versions(self) -> tuple[str, ...]:
        return (self.version,)

    def embed(self, images: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        self.calls += len(images)
        x = images[:, :, ::-1] if mirror else images
        n, side = len(x), x.shape[1] // 2 * 2
        cells = x[:, :side, :side].reshape(n, 2, side // 2, 2, side // 2, 3).mean(axis=(2, 4))
        pooled = cells.reshape(n, 12) / 255.0
        return (pooled @ self.projection).astype("float32"), pooled.mean(axis=1) < (
            self.fallback_below)

    # The chips and network of an export: the 40x40 picture is its own chip, and the network
    # computes embed's vectors from it with stock Keras layers.
    CHIP_SIZE = 40

    def chips(self, images: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        assert images.shape[1:] == (self.CHIP_SIZE, self.CHIP_SIZE, 3), images.shape
        x = images[:, :, ::-1] if mirror else images
        return np.ascontiguousarray(x), np.zeros(len(x), bool)

    def descriptor_network(self):  # -> keras.Model
        import keras

        chips = keras.Input((self.CHIP_SIZE, self.CHIP_SIZE, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255.0)(chips)
        x = keras.layers.AveragePooling2D(self.CHIP_SIZE // 2)(x)  # (B, 2, 2, 3): embed's cells
        dense = keras.layers.Dense(self.dim, use_bias=False)
        model = keras.Model(chips, dense(keras.layers.Flatten()(x)))
        dense.set_weights([self.projection])
        return model


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeEmbedder:
    """A :class:`FakeEmbedder` in place of dlib128 (no dlib needed), with a fresh embedding
    cache under ``tmp_path``."""
    from facefold.embeddings import dlib128

    fake = FakeEmbedder()
    monkeypatch.setattr(dlib128, "load", lambda: fake)
    monkeypatch.setenv("FACEFOLD_CACHE", str(tmp_path / "embedding-cache"))
    keep_no_lite(monkeypatch)
    return fake


def keep_no_lite(patch: pytest.MonkeyPatch) -> None:
    """``fit`` under a fake embedder keeps no ``MODEL/lite``: that TFLite copy would hold the
    fake's network, whose chips are the 40 px pictures themselves, and would be run on every
    later load of the model. The real copy is checked by tests/test_startup.py and
    tests/test_export_embedding.py."""
    from facefold import fitting

    patch.setattr(fitting, "_keep_lite", lambda model_dir, log: None)


@pytest.fixture(scope="module")
def module_fake_embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeEmbedder]:
    """:class:`FakeEmbedder` for a whole test module (for module-scoped fixtures that train on
    it), with an embedding cache of its own."""
    from facefold.embeddings import dlib128

    fake = FakeEmbedder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dlib128, "load", lambda: fake)
        patch.setenv("FACEFOLD_CACHE", str(tmp_path_factory.mktemp("embedding-cache")))
        keep_no_lite(patch)
        yield fake
