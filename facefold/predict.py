"""Name the people in pictures with a trained run or an exported model.

A :class:`Predictor` is loaded once from MODEL, which is either

- a **run folder** (``facefold train --out RUN`` or a ``case-K`` of a
  cross-validation): its newest checkpoint, ``labels.txt`` and
  ``config.json``; the dataset's image size is read from the manifest of the
  dataset named in ``run.json`` (else from its first shard, else
  ``crop_size + 16``); or
- an **export folder** written by ``facefold export`` (see
  :mod:`facefold.export`), which carries all of that in ``export.json``.

Preprocessing is the one of evaluation: a picture is decoded to RGB
(:func:`facefold.data.images.load_rgb`), resized and centre-cropped to the
dataset's square image size (:func:`~facefold.data.images.square_crop`), made
gray for a 1-channel model, and fed as uint8 to the *inference model*, which
cuts the central ``crop_size`` window (:func:`facefold.data.pipeline.center_crop`)
and runs the network; the network resizes and standardizes itself. The
inference model returns ``logits`` (N, classes) and ``features`` (N, D), the
input of the logits layer, which the ``cosine`` open-set score compares with
the per-person centroids (see :mod:`facefold.evaluate.openset`).

**Embedding heads** (``model.embedding``, e.g. the ``dlib128`` preset): the
square uint8 picture is embedded by the pretrained model (image and, with
flip TTA, its mirror; see :mod:`facefold.embeddings.dlib128`), and the head's
inference model maps the views (N, V, D) to ``logits`` and ``features``. The
run (or export) records the embedding's model version; loading it with other
installed weights is an error, as the head would get foreign embeddings.

**Ensembles** (a run with ``ensemble.json``, or an export with an
``ensemble`` entry): every member is loaded as its own predictor, and the
ensemble's probabilities are the mean of the members' softmax probabilities;
its ``logits`` are their logarithm (so softmax gives the mean back) and its
``features`` the members' features side by side. Members must share the
labels, image size and channels.

"Unknown": when the model folder holds a ``threshold.json`` (written by
``facefold cv --unknown-people``), or a threshold is given, a face whose
open-set score is below it is answered as :data:`UNKNOWN`.

Whole photos (``detect=True``): every face that
``facefold.faces.detect.detect_faces`` finds is aligned to the dataset's image
size with ``align_face`` and recognized, with its box. **Fallback rule**: when
that detector is not installed or finds no face, the whole picture is taken as
one face crop only if it looks like one: nearly square (sides within 10 %) and
at most :data:`MAX_CROP_SIDE` pixels on its longer side. Otherwise
:class:`NoFaceError` is raised.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

import facefold
from facefold.config import EMBEDDING_DIMS, Config, ModelSpec
from facefold.data.images import MIN_PICTURE_SIDE, ImageError, load_rgb, square_crop
from facefold.data.pipeline import center_crop
from facefold.data.records import MANIFEST_FILE, REQUIRED_FEATURES, list_shards
from facefold.embeddings.shards import embed_images, embedder
from facefold.evaluate.openset import (
    CENTROIDS_FILE,
    DEFAULT_SCORE,
    SCORES,
    open_set_scores,
    read_threshold,
)
from facefold.models.cnn import build_model  # also registers the custom layer checkpoints need
from facefold.models.head import build_head
from facefold.train.ensemble import ENSEMBLE_FILE
from facefold.train.trainer import latest_checkpoint

EXPORT_FILE = "export.json"
# Bump when export.json or the model files change meaning; loading checks it.
EXPORT_FORMAT = 1
MODEL_FILES = {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite"}
UNKNOWN = "unknown"
# A dataset image is crop_size + 16 when the dataset is gone (112 for the 96 crop).
CROP_MARGIN = 16
# The fallback rule: a picture this small and nearly square is taken as one face crop.
MAX_CROP_SIDE = 512
SQUARE_TOLERANCE = 0.10
# Images per inference call: bounded memory, and big enough to amortize the call.
BATCH_SIZE = 64

Box = tuple[float, float, float, float]  # x, y, width, height in the photo's pixels
Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


class NoFaceError(ValueError):
    """No face was found in a photo (and the photo is not itself a face crop)."""


@keras.saving.register_keras_serializable(package="facefold")
class CenterCropScale(keras.layers.Layer):
    """uint8 images (B, S, S, C) -> their central ``crop`` window as float32 in [0, 1]."""

    def __init__(self, crop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crop = crop

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return center_crop(images, self.crop)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "crop": self.crop}


@keras.saving.register_keras_serializable(package="facefold")
class MatrixResize(keras.layers.Layer):
    """The antialiased resize of :class:`keras.layers.Resizing`, as two matrix products.

    An antialiased (triangle-filter) resize is linear and separable: each
    output row mixes input rows with fixed weights, and likewise for columns.
    The weights are read off by resizing the identity, so this is the same
    resize as in training, built from ops that TFLite has (its converter has no
    ``ScaleAndTranslate``, the op behind ``antialias=True``).
    """

    def __init__(self, size_in: int, size_out: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size_in, self.size_out = size_in, size_out
        basis = tf.eye(size_in)[:, :, None, None]  # size_in images of (size_in, 1, 1)
        resized = tf.image.resize(basis, (size_out, 1), antialias=True)  # (in, out, 1, 1)
        self.weights_matrix = tf.transpose(resized[:, :, 0, 0]).numpy()  # (out, in)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        matrix = tf.constant(self.weights_matrix)
        x = tf.transpose(images, [0, 3, 1, 2])  # (B, C, H, W)
        x = tf.matmul(tf.matmul(matrix, x), matrix, transpose_b=True)  # (B, C, out, out)
        return tf.transpose(x, [0, 2, 3, 1])  # (B, out, out, C)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size_in": self.size_in, "size_out": self.size_out}


def inference_model(model: keras.Model, spec: ModelSpec, image_size: int) -> keras.Model:
    """Wrap a trained CNN as uint8 image (B, S, S, C) -> ``{"logits", "features"}``, float32.

    The network is rebuilt in float32 with the trained weights (a bfloat16
    run predicts in float32), its resize done by :class:`MatrixResize`, so
    every export format runs the same ops and computes the same numbers.
    """
    # The same network without its (weightless) resize layer: input is the resized crop.
    net = build_model(dataclasses.replace(spec, crop_size=spec.input_size),
                      int(model.output_shape[-1]), "float32")
    net.set_weights(model.get_weights())
    heads = keras.Model(
        net.inputs,
        {"logits": net.output, "features": net.get_layer("logits").input},
        name="cnn_with_features",
    )
    image = keras.Input((image_size, image_size, spec.channels), dtype="uint8", name="image")
    x = CenterCropScale(spec.crop_size, name="center_crop")(image)  # (B, crop, crop, C)
    if spec.input_size != spec.crop_size:
        x = MatrixResize(spec.crop_size, spec.input_size, name="resize")(x)  # (B, in, in, C)
    return keras.Model(image, heads(x), name="facefold_inference")


def head_inference_model(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """Wrap a trained embedding head as embeddings (B, V, D) -> ``{"logits", "features"}``,
    float32; ``features`` is the input of its logits layer (the mean over the views)."""
    net = build_head(spec, int(model.output_shape[-1]), "float32")
    net.set_weights(model.get_weights())
    return keras.Model(
        net.input, {"logits": net.output, "features": net.get_layer("logits").input},
        name="facefold_head_inference",
    )


def embedding_infer(head: Infer, embedding: dict[str, Any]) -> Infer:
    """Inference from uint8 images (B, S, S, 3): their ``embedding["views"]`` embeddings
    (computed, not cached: pictures to name are new), then ``head``."""
    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        vectors, _ = embed_images(images, embedding["name"], embedding["views"])
        return head(vectors)

    return infer


def ensemble_infer(members: Sequence[Infer]) -> Infer:
    """Inference of an ensemble: log of the mean of the members' softmax probabilities as
    ``logits``, the members' ``features`` concatenated."""
    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = [member(images) for member in members]
        mean = np.mean([_softmax(out["logits"]) for out in outputs], axis=0)
        return {
            "logits": np.log(np.maximum(mean, np.finfo(np.float32).tiny)),
            "features": np.concatenate([out["features"] for out in outputs], axis=1),
        }

    return infer


def check_embedding_version(embedding: dict[str, Any], where: Path) -> None:
    """Raise ``ValueError`` when the installed embedding model is not the one ``where``'s head
    learned on (``ModuleNotFoundError`` naming the pip command when it is not installed)."""
    installed = embedder(embedding["name"]).version
    if embedding["model_version"] != installed:
        raise ValueError(
            f"{where} was trained on {embedding['name']} embeddings of model version "
            f"{embedding['model_version'][:12]}…, but the installed weights give version "
            f"{installed[:12]}…: train the head again on this version"
        )


@dataclass(frozen=True)
class Recognition:
    """One recognized face.

    ``name`` is the best person, or :data:`UNKNOWN` when the open-set
    ``score`` is below ``threshold``; ``top`` the ``(name, probability)`` of the
    most likely people; ``box`` where the face is in the photo (None when the
    whole picture was the crop).
    """

    name: str
    known: bool
    top: list[tuple[str, float]]
    score: float | None = None
    score_name: str | None = None
    threshold: float | None = None
    box: Box | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "known": self.known,
            "top": [{"name": n, "probability": p} for n, p in self.top],
            "score": self.score,
            "score_name": self.score_name,
            "threshold": self.threshold,
            "box": list(self.box) if self.box is not None else None,
        }


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder says about its model: people, input, threshold, where it came from."""

    labels: list[str]
    image_size: int
    crop_size: int
    channels: int
    kind: str  # "run" or an export format
    source: Path
    step: int | None = None
    threshold: dict[str, Any] | None = None
    centroids: np.ndarray | None = field(default=None, repr=False)
    # An embedding head's embedding: name, model_version, views (2 with flip TTA), dim.
    embedding: dict[str, Any] | None = None


class Predictor:
    """A model loaded once; names faces in batches. Use :meth:`load`.

    ``members`` are the member predictors of an ensemble by preset name (empty otherwise).
    """

    def __init__(self, info: ModelInfo, infer: Infer, keras_model: keras.Model | None = None,
                 batch_size: int = BATCH_SIZE, members: dict[str, Predictor] | None = None,
                 ) -> None:
        self.info = info
        self._infer = infer
        self.keras_model = keras_model  # the inference model (runs and .keras exports)
        self.batch_size = batch_size
        self.members = dict(members or {})

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """Load a run folder or an export folder; errors name the missing or bad file."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {path} does not exist")
        if (path / EXPORT_FILE).is_file():
            return _load_export(path)
        if (path / "run.json").is_file():
            return _load_run(path)
        if (path / "cv.json").is_file():
            raise ValueError(
                f"{path} is a cross-validation folder, not one model: give one of its runs "
                f"(e.g. {path / 'case-0'}) or an export of one"
            )
        raise FileNotFoundError(
            f"{path} is neither a run folder (no run.json) nor an export (no {EXPORT_FILE})"
        )

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    # ------------------------------------------------------------ arrays in, numbers out

    def to_array(self, image: Image.Image) -> np.ndarray:
        """A picture as the model's uint8 input (S, S, C): square crop to the image size, gray
        for a 1-channel model (ITU-R 601 luma, as the JPEG decoder of the shards)."""
        square = square_crop(image, self.info.image_size)
        if self.info.channels == 1:
            return np.asarray(square.convert("L"))[..., None]
        return np.asarray(square.convert("RGB"))

    def outputs_for_arrays(self, arrays: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logits": (N, C), "features": (N, D)}`` for uint8 images (N, S, S, channels)."""
        expected = (self.info.image_size, self.info.image_size, self.info.channels)
        if arrays.ndim != 4 or arrays.shape[1:] != expected:
            raise ValueError(f"images must be (N, {', '.join(map(str, expected))}), "
                             f"got {arrays.shape}")
        parts: dict[str, list[np.ndarray]] = {"logits": [], "features": []}
        for start in range(0, len(arrays), self.batch_size):
            out = self._infer(np.ascontiguousarray(arrays[start : start + self.batch_size]))
            for key in parts:
                parts[key].append(np.asarray(out[key], np.float32))
        if not len(arrays):
            return {key: np.zeros((0, 0), np.float32) for key in parts}
        return {key: np.concatenate(values) for key, values in parts.items()}

    def outputs(self, images: Sequence[Image.Image]) -> dict[str, np.ndarray]:
        """Logits and features of face crops (any size; see :meth:`to_array`)."""
        shape = (0, self.info.image_size, self.info.image_size, self.info.channels)
        arrays = np.stack([self.to_array(im) for im in images]) if images else np.zeros(
            shape, np.uint8)
        return self.outputs_for_arrays(arrays)

    def predict_crops(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (N, classes) of face crops, in batches."""
        return _softmax(self.outputs(images)["logits"])

    # ------------------------------------------------------------ names

    def rejection(self, threshold: float | None = None,
                  score: str | None = None) -> tuple[str, float] | None:
        """The ``(score name, threshold)`` that decides "unknown", or None (never unknown).

        ``score`` defaults to the stored one, else :data:`DEFAULT_SCORE`;
        ``threshold`` to the stored threshold of that score.
        """
        stored = self.info.threshold or {}
        score = score or stored.get("score") or DEFAULT_SCORE
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if threshold is None:
            threshold = stored.get("thresholds", {}).get(score)
        if threshold is None:
            return None
        if score == "cosine" and self.info.centroids is None:
            raise ValueError(
                f"the cosine score needs {self.info.source / CENTROIDS_FILE} (written by "
                "`facefold cv --unknown-people`); choose --score msp, max_logit or energy"
            )
        return score, float(threshold)

    def recognize(self, images: Sequence[Image.Image], top_k: int = 5,
                  threshold: float | None = None, score: str | None = None,
                  boxes: Sequence[Box | None] | None = None) -> list[Recognition]:
        """Name each face crop: top-``top_k`` people, and "unknown" below the threshold.

        ``boxes`` (one per crop) are copied into the results.
        """
        if top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {top_k}")
        rule = self.rejection(threshold, score)
        if not images:
            return []
        out = self.outputs(images)
        probabilities = _softmax(out["logits"])
        scores = open_set_scores(out["logits"], out["features"], self.info.centroids)
        boxes = boxes or [None] * len(images)
        results = []
        for i, probs in enumerate(probabilities):
            order = np.argsort(-probs, kind="stable")[:top_k]
            top = [(self.labels[c], float(probs[c])) for c in order]
            value = float(scores[rule[0]][i]) if rule else None
            known = rule is None or value >= rule[1]
            results.append(Recognition(
                top[0][0] if known else UNKNOWN, known, top, value,
                rule[0] if rule else None, rule[1] if rule else None, boxes[i],
            ))
        return results

    def face_crops(
        self, photo: Image.Image, detect: bool = True
    ) -> list[tuple[Box | None, Image.Image]]:
        """The faces of a photo as ``(box, crop)`` pairs, largest first (see the fallback rule).

        Raises :class:`NoFaceError` when no face is found and the photo is not a face crop.
        """
        detector = load_detector() if detect else None
        if detector is not None:
            faces = detector.detect_faces(photo)
            if faces:
                return [
                    (tuple(float(v) for v in face.box),
                     detector.align_face(photo, face.landmarks, size=self.info.image_size))
                    for face in faces
                ]
        if looks_like_face_crop(photo):
            return [(None, photo)]
        why = "no face found" if detector is not None else (
            "the face detector is not installed (pip install 'facefold[faces]')")
        raise NoFaceError(
            f"{why}, and the {photo.width}x{photo.height} picture is not a face crop "
            f"(nearly square, at most {MAX_CROP_SIDE} px): give a photo with a visible face "
            "or a cropped face"
        )

    def recognize_photo(self, photo: Image.Image, top_k: int = 5, detect: bool = True,
                        threshold: float | None = None,
                        score: str | None = None) -> list[Recognition]:
        """Every face of one photo, with its box (see :meth:`face_crops`)."""
        found = self.face_crops(photo, detect)
        return self.recognize([c for _, c in found], top_k, threshold, score,
                              [b for b, _ in found])


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for accuracy, returned as float32 (N, C)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def looks_like_face_crop(image: Image.Image) -> bool:
    """The fallback rule: sides within 10 % of each other and at most 512 px."""
    longer, shorter = max(image.size), min(image.size)
    return longer <= MAX_CROP_SIDE and longer - shorter <= SQUARE_TOLERANCE * longer


def load_detector() -> ModuleType | None:
    """``facefold.faces.detect`` (``detect_faces``, ``align_face``) with its detector built,
    or None when it or its ``faces`` extra (``pip install 'facefold[faces]'``) is missing."""
    try:
        from facefold.faces import detect

        detect.load_detector()  # built once per process; fails here when MTCNN is missing
    except ImportError:
        return None
    return detect


# ---------------------------------------------------------------- loading


def dataset_image_size(data_dir: str | Path, crop_size: int) -> int:
    """The side of a dataset's square images: its manifest's ``size``, else the first image of
    its first shard, else ``crop_size + 16`` when the dataset is gone."""
    data_dir = Path(data_dir)
    manifest = data_dir / MANIFEST_FILE
    if manifest.is_file():
        return int(json.loads(manifest.read_text())["size"])
    try:
        first = next(iter(tf.data.TFRecordDataset(str(list_shards(data_dir)[0])).take(1)))
        raw = tf.io.parse_single_example(first, REQUIRED_FEATURES)["image_raw"]
        return int(tf.io.extract_jpeg_shape(raw)[0].numpy())
    except (FileNotFoundError, StopIteration, tf.errors.OpError):
        return crop_size + CROP_MARGIN


def _run_config(run_dir: Path) -> tuple[Config, dict]:
    """The run's config and ``run.json``; a config this facefold cannot read names both versions."""
    info = json.loads((run_dir / "run.json").read_text())
    try:
        return Config.from_dict(info["config"]), info
    except (KeyError, ValueError) as err:
        made_by = "an unknown version"
        versions_file = run_dir / "versions.json"
        if versions_file.is_file():
            made_by = json.loads(versions_file.read_text()).get("facefold", made_by)
        raise ValueError(
            f"{run_dir / 'run.json'}: its config cannot be read by facefold "
            f"{facefold.__version__} (the run was made by facefold {made_by}): {err}"
        ) from err


def _read_run_labels(run_dir: Path) -> list[str]:
    path = run_dir / "labels.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a run folder needs its label list")
    return [n for n in (line.strip() for line in path.read_text("utf-8").splitlines()) if n]


def _load_centroids(folder: Path, classes: int) -> np.ndarray | None:
    path = folder / CENTROIDS_FILE
    if not path.is_file():
        return None
    centroids = np.load(path)
    if centroids.ndim != 2 or centroids.shape[0] != classes:
        raise ValueError(f"{path} holds {centroids.shape} centroids, expected {classes} rows")
    return centroids.astype(np.float32)


def _load_ensemble(folder: Path, member_dirs: dict[str, Path], kind: str,
                   step: int | None) -> Predictor:
    """The members (runs or exports, by preset name) of an ensemble as one :class:`Predictor`."""
    members = {name: Predictor.load(path) for name, path in member_dirs.items()}
    first = next(iter(members.values())).info
    for member in members.values():
        other = member.info
        if (other.labels, other.image_size, other.channels) != (
                first.labels, first.image_size, first.channels):
            raise ValueError(
                f"ensemble members {first.source} and {other.source} differ in their people, "
                "image size or channels: they cannot be averaged"
            )
    info = ModelInfo(first.labels, first.image_size, first.crop_size, first.channels, kind,
                     folder, step)
    return Predictor(info, ensemble_infer([m._infer for m in members.values()]),
                     members=members)


def _load_run(run_dir: Path) -> Predictor:
    """A run folder's newest checkpoint (or an ensemble's members) as a :class:`Predictor`."""
    labels = _read_run_labels(run_dir)
    config, info = _run_config(run_dir)
    if (run_dir / ENSEMBLE_FILE).is_file():
        entries = json.loads((run_dir / ENSEMBLE_FILE).read_text())["members"]
        return _load_ensemble(run_dir, {e["preset"]: run_dir / e["run"] for e in entries},
                              "run", config.train.steps)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(
            f"{run_dir / 'checkpoints'} holds no checkpoint: train the run first"
        )
    step, checkpoint = found
    model = keras.models.load_model(checkpoint, compile=False)
    if model.output_shape[-1] != len(labels):
        raise ValueError(f"{run_dir / 'labels.txt'} lists {len(labels)} people but "
                         f"{checkpoint.name} has {model.output_shape[-1]} outputs")
    spec = config.model
    image_size = dataset_image_size(info["data_dir"], spec.crop_size)
    embedding = None
    if spec.embedding:
        embedding = {**info["embedding"], "views": 2 if spec.tta_flip else 1,
                     "dim": EMBEDDING_DIMS[spec.embedding]}
        check_embedding_version(embedding, run_dir)
        wrapped = head_inference_model(model, spec)
        infer = embedding_infer(keras_infer(wrapped), embedding)
    else:
        wrapped = inference_model(model, spec, image_size)
        infer = keras_infer(wrapped)
    model_info = ModelInfo(labels, image_size, spec.crop_size, spec.channels, "run", run_dir,
                           step, read_threshold(run_dir), _load_centroids(run_dir, len(labels)),
                           embedding)
    return Predictor(model_info, infer, wrapped)


def keras_infer(model: keras.Model) -> Infer:
    """Inference with an in-memory Keras model, traced once per batch shape."""
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda x: {k: v.numpy() for k, v in call(tf.constant(x)).items()}


def savedmodel_infer(path: Path) -> Infer:
    """Inference with a SavedModel written by ``facefold export --format savedmodel``."""
    loaded = tf.saved_model.load(str(path))
    return lambda x: {k: v.numpy() for k, v in loaded.serve(tf.constant(x)).items()}


def tflite_infer(path: Path) -> Infer:
    """Inference with a ``.tflite`` file through ``tf.lite.Interpreter`` (resized per batch)."""
    with warnings.catch_warnings():
        # TF 2.21 still ships tf.lite.Interpreter but warns that it moves to ai_edge_litert.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()  # the export has one input, "image"
    return lambda x: runner(**{name: x})


def read_export_info(folder: Path) -> dict[str, Any]:
    """``export.json`` of an export folder, checked to be of this facefold's export format."""
    path = folder / EXPORT_FILE
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if meta.get("export_format") != EXPORT_FORMAT:
        raise ValueError(
            f"{path} was written by facefold {meta.get('facefold_version', '?')} (export format "
            f"{meta.get('export_format', '?')}); facefold {facefold.__version__} reads export "
            f"format {EXPORT_FORMAT}: export the run again with this version"
        )
    missing = [k for k in ("format", "labels", "image_size", "crop_size", "channels")
               if k not in meta]
    if missing or meta["format"] not in MODEL_FILES:
        raise ValueError(f"{path}: missing {missing} or unknown format {meta.get('format')!r}")
    return meta


def _load_export(folder: Path) -> Predictor:
    """An export folder (``export.json`` + model file) as a :class:`Predictor`."""
    meta = read_export_info(folder)
    if meta.get("ensemble"):
        members = {m["preset"]: folder / m["export"] for m in meta["ensemble"]["members"]}
        return _load_ensemble(folder, members, meta["format"], meta.get("step"))
    model_path = folder / MODEL_FILES[meta["format"]]
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} is missing from the export {folder}")
    labels = list(meta["labels"])
    embedding = meta.get("embedding")
    if embedding:
        check_embedding_version(embedding, folder)
    info = ModelInfo(labels, int(meta["image_size"]), int(meta["crop_size"]),
                     int(meta["channels"]), meta["format"], folder, meta.get("step"),
                     meta.get("threshold"), _load_centroids(folder, len(labels)), embedding)
    model = None
    if meta["format"] == "keras":
        model = keras.models.load_model(model_path, compile=False)
        infer = keras_infer(model)
    elif meta["format"] == "savedmodel":
        infer = savedmodel_infer(model_path)
    else:
        infer = tflite_infer(model_path)
    return Predictor(info, embedding_infer(infer, embedding) if embedding else infer, model)


# ---------------------------------------------------------------- many files (the CLI)

# Files decoded at a time by predict_files: bounded memory, one batched model call per chunk.
FILES_PER_CHUNK = 256


def predict_files(predictor: Predictor, paths: Sequence[str | Path], top_k: int = 5,
                  detect: bool = False, threshold: float | None = None,
                  score: str | None = None) -> list[dict[str, Any]]:
    """Recognize the faces in picture files, batching the model calls over many files.

    Without ``detect`` each picture is one face crop (square-cropped like a
    dataset image); with it, every face is found (see :meth:`Predictor.face_crops`).
    Returns one ``{"image", "faces": [Recognition.to_dict()], "error"}`` per
    file, in order; a file that cannot be read or holds no face gets an
    ``error`` message naming it instead of stopping the others.
    """

    predictor.rejection(threshold, score)  # a bad score or threshold fails before any work
    results: list[dict[str, Any]] = []
    for start in range(0, len(paths), FILES_PER_CHUNK):
        chunk = [Path(p) for p in paths[start : start + FILES_PER_CHUNK]]
        owners, boxes, crops = [], [], []
        for i, path in enumerate(chunk):
            results.append({"image": str(path), "faces": [], "error": None})
            try:
                photo = load_rgb(path, min_side=MIN_PICTURE_SIDE)
                found = predictor.face_crops(photo, detect) if detect else [(None, photo)]
            except (ImageError, NoFaceError) as err:
                results[-1]["error"] = str(err) if isinstance(err, ImageError) else f"{path}: {err}"
                continue
            for box, crop in found:
                owners.append(start + i)
                boxes.append(box)
                crops.append(crop)
        for owner, face in zip(owners, predictor.recognize(crops, top_k, threshold, score, boxes),
                               strict=True):
            results[owner]["faces"].append(face.to_dict())
    return results


def format_results(results: Sequence[dict[str, Any]]) -> str:
    """The results of :func:`predict_files` as text, one line per face."""
    lines = []
    for result in results:
        if result["error"]:
            lines.append(f"{result['image']}: error: {result['error']}")
        for n, face in enumerate(result["faces"], start=1):
            where = result["image"]
            if face["box"] is not None:
                x, y, w, h = (round(v) for v in face["box"])
                where += f" [face {n} at x={x} y={y} w={w} h={h}]"
            top = " | ".join(f"{t['name']} {t['probability']:.3f}" for t in face["top"])
            if face["score_name"] is None:
                lines.append(f"{where}: {top}")
            else:
                sign = ">=" if face["known"] else "<"
                verdict = top if face["known"] else f"{UNKNOWN}; best guesses {top}"
                lines.append(f"{where}: {verdict} ({face['score_name']} {face['score']:.3f} "
                             f"{sign} threshold {face['threshold']:.3f})")
    return "\n".join(lines)
