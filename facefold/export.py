"""``facefold export RUN --format keras|savedmodel|tflite --out DIR``: a self-contained model.

An export folder holds::

    DIR/export.json     labels, image size, crop size, channels, threshold, versions
    DIR/model.keras | DIR/savedmodel/ | DIR/model.tflite    the inference model
    DIR/centroids.npy   per-person mean features (when the run has them: open-set runs)
    DIR/pictures.npz    the training pictures' features (likewise), for the nearest score

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
:func:`facefold.embeddings.pictures.chip_images` (``Predictor.chips``); given
chips, the export runs with TensorFlow alone. ``facefold predict``/``serve``
cut them from the picture with the installed ``facefold[dlib]`` and refuse
chips of other weights. The mirror's chip is not the mirrored chip (the
landmark fit is not mirror-symmetric), so it is an input, not a layer.

**Ensembles** are one model file too, built from each member's export model (its family's
``export_model``: a CNN's takes ``image``, a ``dlib128`` head's holds dlib's network and takes
``chips``). Its inputs are the members' inputs by name — members with inputs of the same name
and shape share one (every CNN member takes the same ``image``); two that differ cannot be
one file, and the export is refused — listed under ``inputs`` in ``export.json`` (name,
dtype, shape, meaning, the members that take it; no ``input`` field). Its outputs are what
the ensemble's run computes (:func:`facefold.models.outputs.combine_outputs`, here as the
layer :class:`~facefold.models.inference.CombineMembers`): ``logits`` the log of the members'
mean softmax probabilities (weighted by each member's ``weight`` in a weighted ensemble), so
the threshold and ``centroids.npy`` of the ensemble apply unchanged; ``features`` each
member's unit features times the square root of its weight, side by side. ``ensemble.members``
lists each member's ``preset``, ``family``, ``input``, ``embedding`` entry (as a head's export
has it), ``source_run`` and ``weight``. ``Predictor.model_inputs`` cuts the inputs of face
crops (the chips with dlib); given them, the file runs with TensorFlow alone. Exports written
before (``model_file`` null, an export of each member in ``DIR/members/<preset>/``) still
load, their members averaged as a run's.

The network is exported in float32 whatever precision it trained in. The
``.keras`` file needs facefold importable (its custom layers); SavedModel and
TFLite need only TensorFlow (TFLite through ``tf.lite.Interpreter``; Flex ops
are allowed for the antialiased resize of the ``sizeNN`` presets).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import facefold
from facefold import runs
from facefold.atomic import staging_folder, swap_in, write_json_atomic, writing
from facefold.choices import EXPORT_FORMATS
from facefold.models.families import FAMILIES
from facefold.models.inference import ensemble_inference_model
from facefold.models.outputs import softmax
from facefold.models.scores import unit_rows
from facefold.predict import Predictor
from facefold.predict.lite import CHECKPOINT_FIELD, checkpoint_digest

# An ensemble's outputs, in its export.json (facefold.models.outputs.combine_outputs).
ENSEMBLE_OUTPUTS = {
    "logits": "float32 (N, classes): the log of the members' mean softmax probabilities "
              "(weighted by each member's weight in a weighted ensemble); softmax gives the "
              "mean back",
    "features": "float32 (N, D): each member's unit-length features times the square root of "
                "its weight (1/M without weights), side by side (cosine open-set score)",
}


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the newest checkpoint of ``run_dir`` (an ensemble: its members') as ``fmt`` into
    the new folder ``out``: one model file and its ``export.json``.

    The folder is written under a temporary name and renamed when complete.
    Raises ``ValueError`` for an unknown format, a folder that is not a run or an ensemble
    whose members cannot share one model's inputs, ``FileExistsError`` when ``out`` exists
    and is not empty. Returns ``out``.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; "
                         f"choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new export folder")
    predictor = _run_predictor(run_dir)
    with staging_folder(out) as tmp:
        _write_export(predictor, fmt, tmp)
        swap_in(tmp, out)  # an existing out is empty, checked above
    return out


def keep_lite(run_dir: str | Path) -> Path:
    """Write (or rewrite) ``RUN/lite`` (:func:`facefold.runs.lite_dir`): a TFLite export of
    the run's newest checkpoint, which ``verify``, ``identify``, ``predict`` and ``serve``
    then run by the LiteRT interpreter, without importing TensorFlow. Kept only when its
    outputs equal the checkpoint's on probe pictures (softmax probabilities and unit
    features within :data:`LITE_TOLERANCE`); ``ValueError`` saying why otherwise (an
    ensemble keeps none: its members are runs of their own). Returns the folder."""
    predictor = _run_predictor(run_dir)
    if predictor.members:
        # Its model file would be its members' checkpoints, which a kept copy, checked
        # against the run's own newest checkpoint, could not follow.
        raise ValueError(f"{run_dir} is an ensemble of runs: it keeps no TFLite export")
    out = runs.lite_dir(run_dir)
    with staging_folder(out) as tmp:
        _write_export(predictor, "tflite", tmp)
        _check_same_outputs(predictor, Predictor.load(tmp))
        swap_in(tmp, out)
    return out


# How far a kept TFLite export's softmax probabilities and unit features may be from the
# checkpoint's (float32 kernels of another runtime: the dlib128 model's differ by about 1e-6).
LITE_TOLERANCE = 1e-4
PROBE_PICTURES = 4


def _check_same_outputs(keras_model: Predictor, lite: Predictor) -> None:
    """``ValueError`` when ``lite`` computes other numbers than ``keras_model`` on seeded
    noise pictures of the model's input size."""
    info = keras_model.info
    pictures = np.random.default_rng(0).integers(
        0, 256, (PROBE_PICTURES, info.image_size, info.image_size, info.channels), np.uint8)
    want, got = keras_model.outputs_for_arrays(pictures), lite.outputs_for_arrays(pictures)
    gaps = {"probabilities": np.abs(softmax(want["logits"]) - softmax(got["logits"])).max(),
            "unit features": np.abs(unit_rows(want["features"])
                                    - unit_rows(got["features"])).max()}
    for what, gap in gaps.items():
        if not gap <= LITE_TOLERANCE:
            raise ValueError(f"the TFLite export of {info.source} gives {what} {gap:.2g} away "
                             f"from its checkpoint's (over {LITE_TOLERANCE:g}): not kept")


def _run_predictor(run_dir: str | Path) -> Predictor:
    """A run folder loaded from its checkpoint (never from its kept TFLite export), to
    export; ``ValueError`` for an export folder."""
    predictor = Predictor.load(run_dir, lite=False)
    if predictor.info.kind != "run":
        raise ValueError(f"{run_dir} is an export already: export from a run folder")
    return predictor


def _write_export(predictor: Predictor, fmt: str, folder: Path) -> None:
    """The export of ``predictor`` (a run) in format ``fmt``, written into ``folder``: one
    model file (an ensemble's: :func:`_ensemble_model`) and its ``export.json``."""
    if predictor.members:
        model, meta = _ensemble_model(predictor, fmt)
    else:
        model, embedding = FAMILIES[predictor.info.family].export_model(
            predictor.keras_model, predictor.info.embedding)
        meta = export_info(predictor, fmt, embedding)
    _write_model(model, fmt, folder / runs.MODEL_FILES[fmt])
    if predictor.info.centroids is not None:
        runs.write_centroids(folder, predictor.info.centroids)
    if predictor.info.pictures is not None:
        runs.write_pictures(folder, predictor.info.pictures.features,
                            predictor.info.pictures.owners)
    write_json_atomic(folder / runs.EXPORT_FILE, meta)


def _ensemble_model(predictor: Predictor, fmt: str) -> tuple[keras.Model, dict[str, Any]]:
    """An ensemble's one model (:func:`~facefold.models.inference.ensemble_inference_model`)
    of its members' export models, each built by its family's ``export_model``, and the
    ``export.json`` that describes its inputs and members."""
    built: dict[str, tuple[keras.Model, str]] = {}
    inputs: dict[str, dict[str, Any]] = {}
    entries = []
    for preset, member in predictor.members.items():
        info = member.info
        family = FAMILIES[info.family]
        model, embedding = family.export_model(member.keras_model, info.embedding)
        model_input = family.export_input(embedding, info.image_size, info.channels)
        name = model_input["name"]
        shared = inputs.setdefault(name, {**model_input, "members": []})
        if {**model_input, "members": shared["members"]} != shared:
            raise ValueError(f"ensemble members {', '.join(shared['members'])} and {preset} "
                             f"take different inputs named '{name}': one model file cannot "
                             "hold them")
        shared["members"].append(preset)
        built[preset] = model, name
        entries.append({"preset": preset, "family": info.family, "input": name,
                        "embedding": embedding, "source_run": str(info.source.resolve()),
                        **runs.weight_field(predictor.member_weights, preset)})
    weights = predictor.member_weights
    model = ensemble_inference_model(
        built, None if weights is None else [weights[preset] for preset in built])
    meta = export_info(predictor, fmt, None, list(inputs.values()))
    meta["outputs"] = ENSEMBLE_OUTPUTS
    meta["ensemble"] = {"members": entries}
    return model, meta


def export_info(predictor: Predictor, fmt: str, embedding: dict | None,
                inputs: list[dict[str, Any]] | None = None) -> dict:
    """The ``export.json`` of an export of ``predictor`` (a run) in format ``fmt``, whose
    model takes what ``embedding`` (the family's export entry, or None) says, or, for an
    ensemble, the ``inputs`` by name."""
    info = predictor.info
    found = runs.latest_checkpoint(info.source)  # the one loaded (None: an ensemble's run)
    described = ({"inputs": inputs} if inputs is not None else
                 {"input": FAMILIES[info.family].export_input(embedding, info.image_size,
                                                              info.channels)})
    return {
        "export_format": runs.EXPORT_FORMAT,
        "facefold_version": facefold.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "format": fmt,
        "family": info.family,
        "model_file": runs.MODEL_FILES[fmt],
        "labels": info.labels,
        "image_size": info.image_size,
        "crop_size": info.crop_size,
        "channels": info.channels,
        **described,
        "embedding": embedding,
        "outputs": {
            "logits": "float32 (N, classes); softmax gives the probabilities of labels",
            "features": "float32 (N, D), input of the logits layer (cosine open-set score)",
        },
        "threshold": info.threshold,
        "centroids_file": runs.CENTROIDS_FILE if info.centroids is not None else None,
        "source_run": str(info.source.resolve()),
        "step": info.step,
        CHECKPOINT_FIELD: checkpoint_digest(found[1]) if found else None,
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
