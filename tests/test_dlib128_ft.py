"""dlib128-ft: dlib's network cut before its fc (the ``dlib128-pool`` embedding), the fc in the
head, fine-tuned from dlib's weights.

Checked here: the cut network and the head's top, untrained, give dlib128's descriptors
(synthetic faces, and ORL crops when ../shared is there); the top's learning-rate scale by
hand; the pooled vectors cached under their own version and reused; the run identity of a
dlib128-ft run and a cv that resumes it; and (slow) a fit model exported in one file that
names chips as the model folder does while ``import dlib`` fails, with enroll and verify on
the folder. Everything but the top's arithmetic needs the ``dlib`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_tiny_dataset, shared_dataset_path
from PIL import Image

from facefold import runs
from facefold.config import EMBEDDING_TOPS
from facefold.models.head import TOP_NAME, TopDense, build_head
from facefold.models.presets import get_preset, resolve_config

POOL = "dlib128-pool"


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    """The whole network and the cut one (keras backend), loaded once."""
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from facefold.embeddings import dlib128

    return {"whole": dlib128.load(), "pool": dlib128.load(name=POOL)}


def _features(head: keras.Model, vectors: np.ndarray) -> np.ndarray:
    """The head's features (the input of its logits) of one view per image (N, D)."""
    inner = keras.Model(head.input, head.get_layer("logits").input)
    return inner.predict(vectors[:, None], verbose=0)


def _untrained_head_gives_the_descriptors(models: dict, images: np.ndarray) -> None:
    whole, whole_fallback = models["whole"].embed(images)
    pooled, pool_fallback = models["pool"].embed(images)
    np.testing.assert_array_equal(pool_fallback, whole_fallback)  # the same chips
    assert pooled.shape == (len(images), 256) and whole.shape == (len(images), 128)
    kernel = models["pool"].top_kernel()
    assert kernel.shape == (256, 128)
    np.testing.assert_allclose(pooled @ kernel, whole, atol=1e-5)
    head = build_head(get_preset("dlib128-ft").model, 5, top_kernel=kernel)
    np.testing.assert_allclose(_features(head, pooled), whole, atol=1e-5)
    assert np.abs(whole).max() > 0.05  # real descriptors, not zeros


def test_the_cut_network_and_the_top_are_dlib128_on_synthetic_faces(
        models: dict, tmp_path: Path) -> None:
    from facefold.data.synthetic import make_synthetic_faces

    faces = make_synthetic_faces(tmp_path / "faces", people=2, per_person=3, size=112)
    images = np.stack([np.asarray(Image.open(p).convert("RGB"))
                       for p in sorted(faces.rglob("*.png"))])
    _untrained_head_gives_the_descriptors(models, images)


def test_the_cut_network_and_the_top_are_dlib128_on_orl_crops(models: dict) -> None:
    from facefold.data.images import load_rgb, square_crop

    folder = shared_dataset_path("orl")
    files = sorted(folder.rglob("*.pgm"))[::41][:8]
    images = np.stack([np.asarray(square_crop(load_rgb(p.read_bytes(), str(p)), 112))
                       for p in files])
    _untrained_head_gives_the_descriptors(models, images)


def test_the_top_moves_lr_scale_times_as_far_as_the_head() -> None:
    """One plain gradient-descent step by hand: the stored kernel moves by lr * its gradient,
    which is lr_scale times the kernel's; so the applied kernel moves lr_scale**2 as far as
    an ordinary Dense, and under Adam (steps of about lr whatever the gradient) lr_scale as
    far."""
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(6, 4)).astype("float32")
    x = rng.normal(size=(3, 1, 6)).astype("float32")
    layer = TopDense(4, 0.1, kernel)
    np.testing.assert_allclose(layer(x).numpy(), x @ kernel, atol=1e-6)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    (grad,) = tape.gradient(loss, [layer.stored])
    # d loss / d kernel = sum over rows of x (every output counts once); stored = kernel / 0.1
    np.testing.assert_allclose(grad.numpy(), 0.1 * np.repeat(
        x.sum(axis=(0, 1))[:, None], 4, axis=1), rtol=1e-5)
    keras.optimizers.Adam(1e-3).apply([grad], [layer.stored])
    moved = np.abs(layer.kernel.numpy() - kernel)
    np.testing.assert_allclose(moved, 1e-4, rtol=1e-2)  # Adam's first step: lr, then * 0.1
    with pytest.raises(ValueError, match="lr_scale must be > 0"):
        TopDense(4, 0.0)


def test_the_preset_holds_dlibs_fc_in_its_head() -> None:
    config = get_preset("dlib128-ft")
    assert config.model.embedding == POOL and config.model.cosine_margin > 0
    head = build_head(config.model, 7)
    top = head.get_layer(TOP_NAME)
    assert top.stored.shape == (256, EMBEDDING_TOPS[POOL]["units"])
    assert head.get_layer("logits").input.shape[-1] == 128  # features: the fine-tuned 128-d


def test_pooled_vectors_are_cached_under_their_own_version(models: dict, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from facefold.embeddings import dlib128
    from facefold.embeddings.cache import EmbeddingCache
    from facefold.embeddings.shards import embed_shards

    monkeypatch.setenv("FACEFOLD_CACHE", str(tmp_path / "cache"))
    data = make_tiny_dataset(tmp_path / "data", classes=2, shards=2, per_shard=2, size=40)
    lines: list[str] = []
    first = embed_shards(data, POOL, 2, log=lines.append, workers=1)
    assert any("embedding 8 of 8 image views" in line for line in lines)
    assert first[0].images.shape == (4, 2, 256)
    entries = sorted((tmp_path / "cache" / POOL).rglob("*.npz"))
    assert len(entries) == 16  # 8 images (some alike) x 2 views at most; 16 distinct here
    version = models["pool"].version
    assert version == dlib128.pool_version(dlib128.weights_dir())
    assert version not in dlib128.same_weights_versions(dlib128.weights_dir())
    with np.load(entries[0]) as entry:
        assert str(entry["version"]) == version
    assert EmbeddingCache(tmp_path / "cache", POOL, models["whole"].version).get(
        entries[0].stem.split("-")[0]) is None  # another version's entry is never used
    lines.clear()
    again = embed_shards(data, POOL, 2, log=lines.append, workers=1)
    assert not any("embedding" in line and "views" in line for line in lines)  # all cached
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.images, b.images)


FT_TINY = {"train": {"steps": 8, "eval_every": 4, "batch_size": 4}}


def test_a_dlib128_ft_run_has_its_own_identity(models: dict, tmp_path: Path) -> None:
    """The identity names the cut embedding's version and how its top is trained."""
    from facefold.models.families import identity_of

    data = make_tiny_dataset(tmp_path / "data", classes=3, shards=2, per_shard=4, size=40)
    fingerprint = runs.data_fingerprint(data)
    ident = identity_of(fingerprint, [0], resolve_config("dlib128-ft", overrides=FT_TINY))
    assert ident["embedding"] == {"name": POOL, "model_version": models["pool"].version,
                                  "top": EMBEDDING_TOPS[POOL]}
    plain = identity_of(fingerprint, [0], get_preset("dlib128"))
    assert plain["embedding"] == {"name": "dlib128", "model_version": models["whole"].version}


@pytest.mark.slow
def test_a_dlib128_ft_run_resumes_as_if_never_killed(models: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed after its first evaluation resumes to the rows of an uninterrupted one
    (the stored, scaled fc kernel and its optimizer slots come back from the checkpoint)."""
    from facefold.models.families import identity_of
    from facefold.train import train, trainer

    monkeypatch.setenv("FACEFOLD_CACHE", str(tmp_path / "cache"))
    data = make_tiny_dataset(tmp_path / "data", classes=3, shards=2, per_shard=4, size=40)
    ft = resolve_config("dlib128-ft", overrides=FT_TINY)
    ident = identity_of(runs.data_fingerprint(data), [0], ft)
    quiet = {"log": lambda _: None}
    whole = train(data, ft, tmp_path / "whole", [0], **quiet)
    original = trainer.Trainer._log_progress

    def killed_after_first_evaluation(self: object, row: dict, seconds: float) -> None:
        raise KeyboardInterrupt  # as if killed right after the step-4 checkpoint

    monkeypatch.setattr(trainer.Trainer, "_log_progress", killed_after_first_evaluation)
    with pytest.raises(KeyboardInterrupt):
        train(data, ft, tmp_path / "resumed", [0], **quiet)
    monkeypatch.setattr(trainer.Trainer, "_log_progress", original)
    resumed = train(data, ft, tmp_path / "resumed", [0], **quiet)
    keys = ("step", "eval_accuracy", "eval_loss", "train_loss")
    assert [r["step"] for r in whole] == [0, 4, 8]
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in whole]
    assert runs.read_run_info(tmp_path / "resumed")["embedding"] == ident["embedding"]
    # The fc learned at its own small rate: 8 Adam steps of at most 1e-2 * 0.01 each.
    trained = keras.models.load_model(runs.latest_checkpoint(tmp_path / "resumed")[1])
    moved = np.abs(trained.get_layer(TOP_NAME).kernel.numpy() - models["pool"].top_kernel())
    assert 0 < moved.max() <= 8 * 1e-4


@pytest.mark.slow
def test_an_export_of_dlib128_ft_names_chips_without_dlib_as_the_model_folder(
        models: dict, tmp_path: Path) -> None:
    """dlib128-ft fit on 8 photos of each of 5 ORL people: the folder enrolls and verifies,
    and its keras export (the cut network, the fine-tuned fc and the cosine head in one file)
    gives the folder's names, scores and features in a process where dlib is blocked."""
    from test_export_embedding import WITHOUT_DLIB, fit_orl

    from facefold.export import export_run
    from facefold.predict import Predictor

    model, pictures, people = fit_orl(tmp_path, "dlib128-ft")
    assert runs.read_run_info(model)["embedding"]["name"] == POOL
    folder = Predictor.load(model)
    expected = folder.recognize(pictures, top_k=1)
    features = folder.outputs(pictures)["features"]
    assert features.shape == (13, 128)
    assert sum(f.name == p for f, p in zip(expected[:10], people, strict=False)) >= 8

    export = export_run(model, "keras", tmp_path / "keras")
    meta = json.loads((export / runs.EXPORT_FILE).read_text())
    assert meta["embedding"]["name"] == POOL and meta["input"]["name"] == "chips"
    chips = Predictor.load(export).chips(pictures)
    np.save(tmp_path / "chips.npy", chips)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", WITHOUT_DLIB, str(tmp_path / "chips.npy"),
                           str(export)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("dlib_loaded") is False
    got = found[str(export)]
    assert got["names"] == [f.name for f in expected]
    np.testing.assert_allclose(got["scores"], [f.score for f in expected], atol=1e-4)
    np.testing.assert_allclose(got["features"], features, atol=1e-4)

    # The folder's own prediction path on the fine-tuned features: enroll, then verify.
    enrolled = Path(shutil.copytree(model, tmp_path / "enrolled"))
    recognizer = Predictor.load(enrolled)
    newcomer = [Image.open(p).convert("RGB")
                for p in sorted((shared_dataset_path("orl") / "s7").glob("*.pgm"))[:4]]
    assert recognizer.enroll("s7", newcomer[:3]) == 3
    assert recognizer.recognize(newcomer[3:], top_k=1)[0].name == "s7"
    assert recognizer.verify(newcomer[0], newcomer[1]).same
    assert not recognizer.verify(newcomer[0], pictures[0]).same
