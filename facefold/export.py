"""``facefold export RUN --format keras|savedmodel|tflite --out DIR``: a self-contained model.

An export folder holds::

    DIR/export.json     labels, image size, crop size, channels, threshold, versions
    DIR/model.keras | DIR/savedmodel/ | DIR/model.tflite    the inference model
    DIR/centroids.npy   per-person mean features (when the run has them: open-set runs)

**Input** of every format: ``image``, uint8, shape ``(N, image_size,
image_size, channels)`` — the *whole* square face image as stored in the
dataset (RGB, or gray for ``channels = 1``), i.e. a face photo resized so the
shorter side is ``image_size`` and centre-cropped to a square. The model cuts
the central ``crop_size`` window itself, scales it to [0, 1], resizes and
standardizes it, so no preprocessing besides the square resize is needed.

**Outputs**: ``logits`` float32 (N, classes), class ``i`` = ``labels[i]``
(softmax gives probabilities), and ``features`` float32 (N, D), the input of
the logits layer, for the ``cosine`` open-set score.

**Unknown people**: ``threshold`` in ``export.json`` (or null) is
``{"score": name, "threshold": t, "thresholds": {score: t, ...}}``; a face
is unknown when its score is below ``t`` (see :mod:`facefold.models.scores`).

**Embedding heads** (e.g. a ``dlib128`` run): the model file holds the
embedding's network (dlib's ResNet in Keras) and the head. Its input is
``chips``, uint8 ``(N, V, 150, 150, 3)``: the aligned chip of each face (V = 2
with flip TTA: the chip of the image, then the chip of its mirror), which
``export.json`` describes under ``embedding`` (name, model version, views,
dim, ``input: "chips"``, chip_size). The chips are cut outside the file —
dlib's landmark fit and ``get_face_chip`` are C++ — by
:func:`facefold.embeddings.shards.chip_images` (``Predictor.chips``); given
chips, the export runs with TensorFlow alone. ``facefold predict``/``serve``
cut them from the picture with the installed ``facefold[dlib]`` and refuse
chips of other weights. The mirror's chip is not the mirrored chip (the
landmark fit is not mirror-symmetric), so it is an input, not a layer.

**Ensembles**: ``DIR/members/<preset>/`` holds an export of each member, and
``export.json`` lists them under ``ensemble`` (with each member's ``weight`` for a
weighted ensemble); loading averages the members' probabilities as for the run.

The network is exported in float32 whatever precision it trained in. The
``.keras`` file needs facefold importable (its custom layers); SavedModel and
TFLite need only TensorFlow (TFLite through ``tf.lite.Interpreter``; Flex ops
are allowed for the antialiased resize of the ``sizeNN`` presets).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

import facefold
from facefold import runs
from facefold.atomic import staging_folder, swap_in, write_json_atomic, writing
from facefold.choices import EXPORT_FORMATS
from facefold.models.families import FAMILIES
from facefold.predict import Predictor


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the newest checkpoint of ``run_dir`` as ``fmt`` into the new folder ``out``.

    The folder is written under a temporary name and renamed when complete.
    Raises ``ValueError`` for an unknown format or a folder that is not a run,
    ``FileExistsError`` when ``out`` exists and is not empty. Returns ``out``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; "
                         f"choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new export folder")
    predictor = Predictor.load(run_dir)
    model_file = FAMILIES[predictor.info.family].export_model_file(fmt)
    if predictor.info.kind != "run" or (predictor.keras_model is None and model_file):
        raise ValueError(f"{run_dir} is an export already: export from a run folder")
    with staging_folder(out) as tmp:
        if model_file:
            model, embedding = FAMILIES[predictor.info.family].export_model(
                predictor.keras_model, predictor.info.embedding)
            meta = export_info(predictor, fmt, embedding)
            _write_model(model, fmt, tmp / model_file)
        else:  # a family without a network of its own: its members' exports
            meta = export_info(predictor, fmt, None)
            meta["ensemble"] = {"members": _export_members(predictor, fmt, tmp)}
        if predictor.info.centroids is not None:
            runs.write_centroids(tmp, predictor.info.centroids)
        write_json_atomic(tmp / runs.EXPORT_FILE, meta)
        swap_in(tmp, out)  # an existing out is empty, checked above
    return out


def _export_members(predictor: Predictor, fmt: str, folder: Path) -> list[dict]:
    """Export each member run of an ensemble into ``folder/members/<name>``; their entries."""
    entries = []
    for preset, member in predictor.members.items():
        target = runs.member_dir(folder, preset)  # a preset name is one folder name, never a path
        name = target.relative_to(folder).as_posix()
        export_run(member.info.source, fmt, target)
        entries.append({"preset": preset, "export": name,
                        "source_run": str(member.info.source.resolve()),
                        **runs.weight_field(predictor.member_weights, preset)})
    return entries


def export_info(predictor: Predictor, fmt: str, embedding: dict | None) -> dict:
    """The ``export.json`` of an export of ``predictor`` (a run) in format ``fmt``, whose
    model takes what ``embedding`` (the family's export entry, or None) says."""
    info = predictor.info
    return {
        "export_format": runs.EXPORT_FORMAT,
        "facefold_version": facefold.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "format": fmt,
        "family": info.family,
        "model_file": FAMILIES[info.family].export_model_file(fmt),
        "labels": info.labels,
        "image_size": info.image_size,
        "crop_size": info.crop_size,
        "channels": info.channels,
        "input": FAMILIES[info.family].export_input(embedding, info.image_size,
                                                   info.channels),
        "embedding": embedding,
        "outputs": {
            "logits": "float32 (N, classes); softmax gives the probabilities of labels",
            "features": "float32 (N, D), input of the logits layer (cosine open-set score)",
        },
        "threshold": info.threshold,
        "centroids_file": runs.CENTROIDS_FILE if info.centroids is not None else None,
        "source_run": str(info.source.resolve()),
        "step": info.step,
    }


def _write_model(model: keras.Model, fmt: str, path: Path) -> None:
    """Save the inference model in ``fmt`` at ``path``."""
    with writing(path):  # Keras's writes name no file when the disk is full
        if fmt == "keras":
            model.save(path)
        elif fmt == "savedmodel":
            model.export(str(path), format="tf_saved_model", verbose=False)
        else:
            path.write_bytes(_tflite_bytes(model))


def _tflite_bytes(model: keras.Model) -> bytes:
    """Convert through a temporary SavedModel, which keeps the named signature."""
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,  # only the antialiased resize needs a Flex op
        ]
        return converter.convert()
