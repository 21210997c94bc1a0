"""dlib's 128-d face descriptor of face crops (the ``dlib128`` embedding).

**Where the model comes from** (the dlib-models README by Davis King, who
trained both models): ``dlib_face_recognition_resnet_model_v1`` is a ResNet
with 29 conv layers (ResNet-34 with a few layers removed and half the
filters), trained from scratch with a pair-wise metric loss on about 3
million faces of 7,485 people: the FaceScrub dataset, the VGG Face dataset
(Parkhi et al. 2015; not VGGFace2) and images scraped from the internet,
about half of them from VGG Face and FaceScrub, cleaned of labelling errors;
no identity overlaps LFW (its published LFW accuracy: docs/models.md, "A head on a
pretrained embedding"). The
five-point landmark model ``shape_predictor_5_face_landmarks`` was trained
on dlib's 5-point landmark dataset, 7,198 faces from the internet annotated
by Davis King. Both are released into the public domain (dlib-models) and
come inside the ``face_recognition_models`` 0.3.0 package under CC0 1.0 (its
LICENSE file): ``pip install 'facefold[dlib]'`` installs them with the
prebuilt ``dlib-bin`` wheel, and nothing is downloaded at run time. Its
training people are mostly celebrities, so on a dataset of celebrities (such
as celeb21) some test people may have been seen by the embedding: accuracy
there can be higher than on people it never saw.

**Per image** (the whole square image as stored in a dataset, RGB uint8):

1. the five landmarks (eye corners, bottom of the nose) with the whole image
   as the face box: dataset images are face crops, so the crop is about the
   box a face detector would give;
2. a plausibility check (:func:`landmarks_plausible`); when the fit fails —
   a point outside the image, an eye distance under 15 % or over 60 % of the
   side, an eye line tilted over 30°, or a nose not 0.3–1.5 eye distances
   below the eyes (seen on profile faces) — the whole image resized to the
   chip size is the chip instead, and the image is counted as a *fallback*;
3. otherwise dlib's aligned face chip (150×150, padding 0.25, dlib's defaults);
4. the 128-d descriptor of the chip, by one of two *backends*:

   - ``"keras"`` (the default): dlib's network rebuilt in Keras from the same weight file
     (:mod:`facefold.embeddings.resnet`, read by :mod:`~facefold.embeddings.dlib_format`),
     the chips of a call in batches; the same vectors as dlib's to float32 rounding
     (max abs diff under 1e-6, see docs/models.md), 11–22× the throughput on 2 cores;
   - ``"dlib"``: dlib's own ``face_recognition_model_v1.compute_face_descriptor``, the
     reference, one chip after another on one core.

   Steps 1–3 are dlib's (``shape_predictor``, ``get_face_chip``) with either backend: they
   take a few milliseconds per image, and matching dlib's alignment pixel for pixel is what
   keeps the descriptors equal.

The *model version* (:func:`model_version`) hashes the two weight files, the
parameters of these steps and the backend; cached embeddings of another version
are never used (see :mod:`facefold.embeddings.cache`), so vectors of the two
backends never mix in a cache or a run. Only the ``keras`` backend imports
TensorFlow, when a :class:`Dlib128` is made.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facefold.config import EMBEDDING_DIMS
from facefold.data.images import file_sha256

if TYPE_CHECKING:  # TensorFlow is imported only by the keras backend, when it is built
    import keras

NAME = "dlib128"
# The same network cut before its 128-d fc: the 256-d average pool of the last residual stage,
# keras backend only. A head on it holds the fc and fine-tunes it (facefold.models.head).
POOL_NAME = "dlib128-pool"
NAMES = (NAME, POOL_NAME)
POOL_CUT = "avg_pool: the 256-d mean of the last residual stage, before the 128-d fc"
INSTALL_HINT = "pip install 'facefold[dlib]'"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150  # the descriptor network's input
CHIP_PADDING = 0.25
# The landmark check (see the module docstring): loose enough for aligned frontal crops, strict
# enough to catch the fits that fail on strong profiles; every run records how many fell back
# (run.json's landmark_fallbacks, docs/models.md "A head on a pretrained embedding").
EYE_DISTANCE = (0.15, 0.60)  # of the image side
MAX_EYE_TILT = 30.0  # degrees
NOSE_DROP = (0.3, 1.5)  # nose below the eyes' midpoint, in eye distances
# Bump when the steps above change meaning: cached embeddings are then recomputed.
PIPELINE_VERSION = 1
BACKENDS = ("keras", "dlib")  # the descriptor's: the first is the default
# Bump when facefold.embeddings.resnet changes its numbers: cached keras embeddings are redone.
KERAS_VERSION = 1
BATCH = 16  # chips per call of the descriptor network (see Dlib128.embed)
# dlib's 5-point order: image-right eye (outer, inner corner), image-left eye (outer, inner), nose.
_EYE_A, _EYE_B, _NOSE = slice(0, 2), slice(2, 4), 4


def _import_dlib() -> ModuleType:
    try:
        import dlib
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the {NAME} embedding needs dlib and its model weights ({err}): {INSTALL_HINT}"
        ) from None
    return dlib


def weights_dir() -> Path:
    """The folder of the ``face_recognition_models`` weights; ``ModuleNotFoundError`` naming the
    pip command when the package or a weight file is missing.

    The package is located, not imported: its ``__init__`` imports ``pkg_resources``, which
    recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(next(iter(spec.submodule_search_locations)), "models") if (
        spec and spec.submodule_search_locations) else None
    missing = [f for f in (LANDMARKS_FILE, DESCRIPTOR_FILE)
               if folder is None or not (folder / f).is_file()]
    if missing:
        raise ModuleNotFoundError(
            f"the {NAME} embedding needs the face_recognition_models weights "
            f"({', '.join(missing)} not found): {INSTALL_HINT}"
        )
    return folder


def require() -> None:
    """Raise ``ModuleNotFoundError`` with the pip command unless dlib and the weights are there."""
    _import_dlib()
    weights_dir()


@functools.cache
def model_version(folder: Path, backend: str = BACKENDS[0]) -> str:
    """SHA-256 (hex) of the weight files' hashes, the chip and landmark-check parameters and
    the descriptor ``backend`` (the ``dlib`` backend's is the version of the embeddings
    facefold computed with dlib alone, so their cache stays valid)."""
    parts = {
        "embedding": NAME, "pipeline": PIPELINE_VERSION,
        "weights": {name: file_sha256(folder / name) for name in (LANDMARKS_FILE, DESCRIPTOR_FILE)},
        "chip": [CHIP_SIZE, CHIP_PADDING],
        "check": [EYE_DISTANCE, MAX_EYE_TILT, NOSE_DROP],
    }
    if backend != "dlib":
        parts["descriptor"] = [backend, KERAS_VERSION]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def pool_version(folder: Path) -> str:
    """The model version of the :data:`POOL_NAME` vectors: the keras descriptor's version
    and where the network is cut (:data:`POOL_CUT`), so the cache says what the vectors are."""
    parts = {"embedding": POOL_NAME, "network": model_version(folder, "keras"), "cut": POOL_CUT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def same_weights_versions(folder: Path) -> tuple[str, ...]:
    """The model versions of every backend on the weights in ``folder``, default first: the
    same landmarks, chips and descriptor weights, whose vectors agree to float32 rounding (max
    abs diff 5.4e-7, tests/test_dlib_resnet.py). A head trained on one backend's vectors may
    be given the other's; a *cache* or a run's identity still tells them apart."""
    return tuple(model_version(folder, backend) for backend in BACKENDS)


def check_backend(backend: str) -> str:
    """``backend`` when it is one of :data:`BACKENDS`, else ``ValueError`` naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def landmarks_plausible(points: np.ndarray, side: int) -> bool:
    """Whether five dlib landmarks (5, 2) (x, y) fit a face filling a ``side``-pixel image."""
    if (points < 0).any() or (points > side - 1).any():
        return False
    eye_a, eye_b = points[_EYE_A].mean(axis=0), points[_EYE_B].mean(axis=0)
    dx, dy = eye_a - eye_b
    distance = float(np.hypot(dx, dy))
    if not EYE_DISTANCE[0] * side <= distance <= EYE_DISTANCE[1] * side:
        return False
    if abs(np.degrees(np.arctan2(dy, abs(dx)))) > MAX_EYE_TILT:
        return False
    drop = points[_NOSE, 1] - (eye_a[1] + eye_b[1]) / 2
    return NOSE_DROP[0] * distance <= drop <= NOSE_DROP[1] * distance


class Dlib128:
    """The landmark and descriptor networks, loaded once (see :func:`load`).

    ``backend``: ``"keras"`` (default; builds the Keras network at the first descriptor,
    converting dlib's weights the first time on a machine, about two seconds) or ``"dlib"``
    (dlib's own descriptor, the reference). ``cache_dir``: where the converted weights are
    kept (default :func:`~facefold.machine.default_cache_dir`). ``name``: :data:`NAME` (the
    128-d descriptor) or :data:`POOL_NAME` (the network cut before its fc: 256-d vectors, keras
    backend only; :meth:`top_kernel` is the fc a head on them starts from).
    """

    def __init__(self, backend: str = BACKENDS[0], cache_dir: str | Path | None = None,
                 name: str = NAME) -> None:
        self.backend = check_backend(backend)
        self.name = check_name(name)
        if name == POOL_NAME and backend != "keras":
            raise ValueError(f"the {POOL_NAME} embedding is the Keras network's pool layer: "
                             f"it needs the keras backend, got {backend!r}")
        self._dlib = _import_dlib()
        folder = weights_dir()
        self._landmarks = self._dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._network: keras.Model | None = None
        self._top: np.ndarray | None = None
        self._describe: Callable[[np.ndarray], np.ndarray] | None = None
        if backend == "dlib":
            model = self._dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
            self._describe = functools.partial(_dlib_descriptors, model)
        # The keras backend's network is built at its first descriptor: cutting chips (all
        # that an export holding the network needs) then imports no TensorFlow.
        self._cache_dir = cache_dir
        self.dim = EMBEDDING_DIMS[name]
        if name == POOL_NAME:
            self.version = pool_version(folder)
            self.equivalent_versions: tuple[str, ...] = (self.version,)
        else:
            self.version = model_version(folder, backend)
            self.equivalent_versions = same_weights_versions(folder)

    def descriptor_network(self) -> keras.Model:
        """The Keras network of this embedding (the keras backend's own, else built now):
        uint8 chips (B, 150, 150, 3) -> (B, :attr:`dim`) float32; what an export puts in its
        file."""
        if self.backend != "keras":
            return descriptor_network(self._cache_dir)
        if self._network is None:
            network = descriptor_network(self._cache_dir)
            if self.name == POOL_NAME:
                from facefold.embeddings import resnet  # TensorFlow: only for this backend

                network, self._top = resnet.split_top(network)
            self._network = network
        return self._network

    def _descriptors(self) -> Callable[[np.ndarray], np.ndarray]:
        """chips (B, 150, 150, 3) uint8 -> (B, :attr:`dim`) float32, by this backend."""
        if self._describe is None:
            from facefold.embeddings import resnet  # TensorFlow: only for this backend

            self._describe = resnet.descriptor_function(self.descriptor_network())
        return self._describe

    def top_kernel(self) -> np.ndarray:
        """The kernel (256, 128) float32 of dlib's fc, which follows the :data:`POOL_NAME`
        vectors in the whole network: its 128-d descriptor is ``pool @ top_kernel()``."""
        if self.name != POOL_NAME:
            raise ValueError(f"the {self.name} embedding is the whole network: no top layer")
        self.descriptor_network()  # cuts the network, keeping its fc
        assert self._top is not None
        return self._top

    def chip(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(chip, fallback)``: the 150×150 aligned chip of a square RGB uint8 image (S, S, 3),
        or the whole image resized when its landmarks are implausible (``fallback`` True)."""
        side = image.shape[0]
        shape = self._landmarks(image, self._dlib.rectangle(0, 0, side - 1, side - 1))
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        if landmarks_plausible(points, side):
            return self._dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING), False
        whole = Image.fromarray(image).resize((CHIP_SIZE, CHIP_SIZE), Image.Resampling.LANCZOS)
        return np.asarray(whole), True

    def chips(self, images: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`chip` of each square RGB uint8 image (N, S, S, 3), or of its left-right
        mirror: ``(chips, fallback)``, (N, 150, 150, 3) uint8 and (N,) bool. The input of
        the descriptor network, and of an export of a head (which holds that network)."""
        images = _square_rgb(images, mirror)
        pairs = [self.chip(np.ascontiguousarray(image, np.uint8)) for image in images]
        chips = np.stack([c for c, _ in pairs]) if pairs else np.zeros(
            (0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        return chips, np.array([f for _, f in pairs], bool)

    def embed(self, images: np.ndarray, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Descriptors of square RGB uint8 images (N, S, S, 3), or of their left-right mirrors.

        Returns ``(embeddings, fallback)``: (N, 128) float32 and (N,) bool (see :meth:`chip`).
        The chips are described in batches of :data:`BATCH`, each in a second thread while
        this one cuts the next batch's chips: the descriptor network leaves the GIL, so the
        landmark fit (one core) overlaps it instead of leaving the cores idle in between.
        """
        images = _square_rgb(images, mirror)
        if not len(images):
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        described, fallback = [], []
        describe = self._descriptors()
        with ThreadPoolExecutor(1) as network:
            for start in range(0, len(images), BATCH):
                chips, failed = self.chips(images[start : start + BATCH])
                fallback.append(failed)
                described.append(network.submit(describe, chips))
            vectors = [np.asarray(v.result(), np.float32) for v in described]
        return np.concatenate(vectors).reshape(-1, self.dim), np.concatenate(fallback)


def _square_rgb(images: np.ndarray, mirror: bool) -> np.ndarray:
    """``images`` (N, S, S, 3), left-right mirrored when ``mirror``; ``ValueError`` for another
    shape."""
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square RGB (N, S, S, 3), got {images.shape}")
    return images[:, :, ::-1] if mirror else images


def descriptor_network(cache_dir: str | Path | None = None) -> keras.Model:
    """dlib's descriptor network in Keras (:mod:`facefold.embeddings.resnet`), built from the
    installed weight file with TensorFlow alone (no dlib); conversion cached in ``cache_dir``
    (default :func:`~facefold.machine.default_cache_dir`)."""
    from facefold.embeddings import resnet
    from facefold.machine import default_cache_dir

    return resnet.load_descriptor(weights_dir() / DESCRIPTOR_FILE,
                                  cache_dir or default_cache_dir())


def _dlib_descriptors(model: object, chips: np.ndarray) -> np.ndarray:
    """dlib's descriptors of chips (N, 150, 150, 3) uint8: (N, 128) float32."""
    vectors = model.compute_face_descriptor(list(chips))  # type: ignore[attr-defined]
    return np.array(vectors, np.float32)


def check_name(name: str) -> str:
    """``name`` when it is one of :data:`NAMES`, else ``ValueError`` naming them."""
    if name not in NAMES:
        raise ValueError(f"unknown embedding {name!r}; known: {', '.join(NAMES)}")
    return name


def load(backend: str = BACKENDS[0], name: str = NAME) -> Dlib128:
    """The process's :class:`Dlib128` of ``backend`` and embedding ``name`` (built on the
    first call: about a second for ``dlib``; ``keras`` builds its network at the first
    descriptor, a few seconds)."""
    return _loaded(check_backend(backend), check_name(name))


@functools.cache
def _loaded(backend: str, name: str) -> Dlib128:
    return Dlib128(backend, name=name)


def embed_stored(stored: Sequence[tuple[bytes, str]], mirror: bool, backend: str = BACKENDS[0],
                 name: str = NAME) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`Dlib128.embed` of images as stored in records, ``(bytes, where)`` pairs (``where``
    names the record in errors): decoded here, so that decoding runs in parallel too.

    The unit of work of an embedding worker process (see
    :class:`facefold.embeddings.shards.EmbeddingWorkers`) with the model of ``backend`` and
    embedding ``name``.
    """
    return load(backend, name).embed(decode_stored(stored), mirror)


def decode_stored(stored: Sequence[tuple[bytes, str]]) -> np.ndarray:
    """Images as stored in records, ``(bytes, where)`` pairs, as RGB uint8 (N, S, S, 3)."""
    from facefold.data.images import load_rgb

    return np.stack([np.asarray(load_rgb(data, where)) for data, where in stored])
