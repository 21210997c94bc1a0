"""Loading a model folder — a run or an export — into what inference needs.

A **run folder** (``facefold train --out RUN`` or a ``case-K`` of a
cross-validation) gives its newest checkpoint, ``labels.txt``, config and the
image size its ``run.json`` records (:mod:`facefold.runs`); nothing is read
back from the dataset. An **export folder** (``facefold export``, see
:mod:`facefold.export`) carries all of that in ``export.json``. Both are
treated as untrusted data: every field is type- and range-checked with the
file named, labels must match the model's outputs, and every path stays
inside the folder.

What differs by model family (the inference model of a CNN or an embedding
head, embedding each picture first) is asked of the family
(:mod:`facefold.models.families`). An ensemble's run loads each member as a model of
its own and averages their probabilities (:func:`~facefold.models.outputs.ensemble_infer`),
weighted by the weights a weighted ensemble's ``ensemble.json`` records for each member. An
ensemble's export is one model file doing the same
(:func:`~facefold.models.inference.ensemble_inference_model`), fed each member's input by
name (``image``, ``chips``); an export written before that (``model_file`` null) holds its
members' exports in ``members/<preset>/``, loaded and averaged as a run's members.

A run can be loaded with other inference options than its config's, since it keeps what they
need: ``tta`` turns flip test-time augmentation on or off (it adds no weights: the CNN is
rebuilt with or without its mirror view, an embedding head takes one view or two), and
``load_checkpoint`` replaces how the checkpoint becomes a Keras model
(:mod:`facefold.evaluate.heldout` uses it for the raw weights of a weight-averaged run, which
needs the training code that this module must not import). An export's inference is fixed
when it is written, so neither applies to one.

**Without TensorFlow**: a TFLite export, and a run that keeps one of its newest checkpoint
(``RUN/lite``, :func:`facefold.predict.lite.kept_export`; ``facefold fit`` writes it), are run
by the LiteRT interpreter (:mod:`facefold.predict.lite`), with the run's own labels,
threshold, centroids and gallery. This module imports TensorFlow only when a model needs it
(a checkpoint, a ``.keras`` or SavedModel export), through
:func:`facefold.machine.start_tensorflow`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import facefold
from facefold import runs
from facefold.config import FAMILIES
from facefold.data.records import MAX_IMAGE_SIZE, label_name_problem
from facefold.embeddings.pictures import check_embedding_meta, chip_inputs, takes_chips
from facefold.machine import start_tensorflow
from facefold.models.outputs import Infer, check_named_inputs, ensemble_infer, members_infer
from facefold.models.scores import PersonPictures
from facefold.predict.lite import kept_export, tflite_infer

if TYPE_CHECKING:  # TensorFlow is imported only for a model that needs it
    import keras

    from facefold.models.families import ModelFamily

# The family of an ensemble (facefold.models.families.Ensemble, which imports TensorFlow).
ENSEMBLE = "ensemble"
# (run folder, checkpoint) -> the trained network, as load_model_folder's load_checkpoint.
CheckpointLoader = Callable[[Path, Path], "keras.Model"]


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
    family: str = "cnn"
    # What runs the network: "keras", "savedmodel", or the TFLite file's "litert" or
    # "tensorflow" (tf.lite.Interpreter).
    runtime: str = "keras"
    # The training pictures' features, for the nearest score (pictures.npz; None without).
    pictures: PersonPictures | None = field(default=None, repr=False)


@dataclass
class LoadedModel:
    """A model folder loaded for inference: ``infer`` maps uint8 pictures (N, S, S, C) to
    ``{"logits", "features"}``; ``keras_model`` is the wrapped inference model (runs and
    ``.keras`` exports; what ``export`` saves); ``members`` an ensemble's, by preset, and
    ``weights`` a weighted ensemble's member weights, by preset (None: the plain mean);
    ``model_infer`` the inference on what the model itself takes (a CNN: the pictures; a
    head's run: embeddings; a head's export: chips; an ensemble's run: each member's, by
    preset; an ensemble's export: each input, by name) and ``model_inputs`` maps pictures
    to that."""

    info: ModelInfo
    infer: Infer
    keras_model: keras.Model | None = None
    members: dict[str, LoadedModel] = field(default_factory=dict)
    weights: dict[str, float] | None = None
    model_infer: Callable[[Any], dict[str, np.ndarray]] | None = None
    model_inputs: Callable[[np.ndarray], Any] | None = None


def load_model_folder(path: str | Path, tta: bool | None = None,
                      load_checkpoint: CheckpointLoader | None = None,
                      crops: bool | None = None, lite: bool = True) -> LoadedModel:
    """Load a run folder or an export folder; errors name the missing or bad file.

    ``tta`` overrides a run's ``model.tta_flip`` (None: the run's own), ``crops`` a CNN run's
    ``model.tta_crops`` (an embedding head has no crops: it ignores it); ``load_checkpoint``
    replaces :func:`checkpoint_model` (None: the checkpoint as saved). For an ensemble they
    apply to every member. An export refuses any of them with a ``ValueError``.
    ``lite``: a run without such overrides is run from the TFLite export it keeps of its
    newest checkpoint, if any (False: from the checkpoint, by Keras; what export needs).
    """
    loaded = _load_network(Path(path), tta, load_checkpoint, crops, lite)
    pictures = runs.read_pictures(path, len(loaded.info.labels))
    if pictures is not None:
        loaded.info = dataclasses.replace(loaded.info, pictures=PersonPictures(*pictures,
                                                                   len(loaded.info.labels)))
    return loaded


def _load_network(path: Path, tta: bool | None, load_checkpoint: CheckpointLoader | None,
                  crops: bool | None, lite: bool) -> LoadedModel:
    """:func:`load_model_folder` but the pictures' features."""
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    if runs.is_export(path):
        if tta is not None or load_checkpoint is not None or crops is not None:
            raise ValueError(
                f"{path} is an export, whose inference (TTA, weights) was fixed when it was "
                "written: evaluate the run folder it was exported from (export.json's "
                "source_run) to change it")
        return _load_export(path)
    if runs.is_run(path):
        kept = kept_export(path) if lite and (tta, load_checkpoint, crops) == (
            None, None, None) else None
        if kept is not None:
            return _load_kept_export(path, kept)
        return _load_run(path, tta, load_checkpoint, crops)
    if runs.is_cv(path):
        raise ValueError(
            f"{path} is a cross-validation folder, not one model: give one of its runs "
            f"(e.g. {runs.case_dir(path, 0)}) or an export of one"
        )
    raise FileNotFoundError(f"{path} is neither a run folder (no {runs.RUN_FILE}) nor an "
                            f"export (no {runs.EXPORT_FILE})")


def _check_outputs(model: keras.Model, labels: list[str], where: Path) -> None:
    """A trained network's logits must be one per label (a checkpoint has one output)."""
    outputs = int(model.output_shape[-1])
    if outputs != len(labels):
        raise ValueError(f"{where} lists {len(labels)} people but the model has {outputs} "
                         "outputs: the label list does not belong to this model")


def _load_ensemble(folder: Path, member_dirs: dict[str, Path], kind: str,
                   step: int | None, weights: dict[str, float] | None = None,
                   tta: bool | None = None,
                   load_checkpoint: CheckpointLoader | None = None,
                   threshold: dict[str, Any] | None = None,
                   crops: bool | None = None) -> LoadedModel:
    """The members (runs or exports, by preset name) of an ensemble as one model, their
    probabilities averaged with ``weights`` (by preset; None: equally); ``threshold`` and the
    folder's centroids are the ensemble's own (a ``facefold fit`` ensemble has them)."""
    members = {name: load_model_folder(path, tta, load_checkpoint, crops)
               for name, path in member_dirs.items()}
    if len(members) < 2:
        raise ValueError(f"{folder}: an ensemble needs at least two members, found "
                         f"{len(members)}")
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
                     folder, step, threshold, runs.read_centroids(folder, len(first.labels)),
                     family=ENSEMBLE)
    order = None if weights is None else [weights[name] for name in members]
    return LoadedModel(info, ensemble_infer([m.infer for m in members.values()], order),
                       members=members, weights=weights,
                       model_infer=members_infer({n: m.model_infer for n, m in members.items()},
                                                 order),
                       model_inputs=lambda images: {n: m.model_inputs(images)
                                                    for n, m in members.items()})


def checkpoint_model(run_dir: Path, checkpoint: Path) -> keras.Model:
    """A run's checkpoint as the trained network, without its optimizer: the weights
    inference uses (a weight-averaged run's checkpoint holds the average in the network)."""
    start_tensorflow()
    import keras

    return keras.models.load_model(checkpoint, compile=False)


def _load_run(run_dir: Path, tta: bool | None = None,
              load_checkpoint: CheckpointLoader | None = None,
              crops: bool | None = None) -> LoadedModel:
    """A run folder's newest checkpoint (or an ensemble's members)."""
    start_tensorflow()  # quietly, before the families' modules import it
    from facefold.models.families import family_of
    from facefold.models.inference import keras_infer

    labels = runs.read_run_labels(run_dir)
    config = runs.read_run_config(run_dir)
    family = family_of(config)
    members = family.combined_runs(run_dir)
    if members is not None:
        return _load_ensemble(run_dir, members, "run", config.train.steps,
                              runs.ensemble_weights(run_dir), tta, load_checkpoint,
                              runs.read_threshold(run_dir), crops)
    found = runs.newest_checkpoint(run_dir)  # a truncated newest one is refused
    if found is None:
        raise FileNotFoundError(
            f"{run_dir / runs.CHECKPOINT_DIR} holds no checkpoint: train the run first"
        )
    step, checkpoint = found
    model = (load_checkpoint or checkpoint_model)(run_dir, checkpoint)
    _check_outputs(model, labels, run_dir / runs.LABELS_FILE)
    if tta is not None:  # TTA adds no weights: the same network with or without the mirror
        config = config.replace(model={"tta_flip": tta})
    if crops is not None and family.reads_pictures:  # nor crop TTA, outside the network
        config = config.replace(model={"tta_crops": crops})
    spec = config.model
    image_size = runs.run_image_size(run_dir, spec.crop_size)
    wrapped, meta = family.inference(model, config, image_size, runs.read_run_info(run_dir))
    model_infer = keras_infer(wrapped)
    inputs = family.picture_inputs(meta, run_dir)
    info = ModelInfo(labels, image_size, spec.crop_size, spec.channels, "run", run_dir, step,
                     runs.read_threshold(run_dir), runs.read_centroids(run_dir, len(labels)),
                     meta, family.name)
    return LoadedModel(info, lambda images: model_infer(inputs(images)), wrapped,
                       model_infer=model_infer, model_inputs=inputs)


def savedmodel_infer(path: Path) -> Infer:
    """Inference with a SavedModel written by ``facefold export --format savedmodel``; ``x``
    is one array, or a dict of arrays by input name (an ensemble's)."""
    tf = start_tensorflow()
    loaded = tf.saved_model.load(str(path))
    return lambda x: {k: v.numpy() for k, v in
                      loaded.serve(tf.nest.map_structure(tf.constant, x)).items()}


def _positive_int(meta: dict[str, Any], key: str, where: Path, low: int = 1,
                  high: int | None = None) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        allowed = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{where}: field '{key}' must be an integer {allowed}, got {value!r}")
    return value


def read_export_info(folder: Path) -> dict[str, Any]:
    """``export.json`` of an export folder, checked field by field (errors name the file and
    the field) and to be of this facefold's export format."""
    path = folder / runs.EXPORT_FILE
    meta = runs.read_json_object(path)
    if meta.get("export_format") != runs.EXPORT_FORMAT:
        raise ValueError(
            f"{path} was written by facefold {meta.get('facefold_version', '?')} (export format "
            f"{meta.get('export_format', '?')}); facefold {facefold.__version__} reads export "
            f"format {runs.EXPORT_FORMAT}: export the run again with this version"
        )
    if meta.get("format") not in runs.MODEL_FILES:
        raise ValueError(f"{path}: field 'format' must be one of {', '.join(runs.MODEL_FILES)}, "
                         f"got {meta.get('format')!r}")
    labels = meta.get("labels")
    if not isinstance(labels, list) or not all(isinstance(n, str) and n for n in labels) or (
            len(set(labels)) != len(labels)):
        raise ValueError(f"{path}: field 'labels' must be a list of distinct, non-empty names")
    for index, name in enumerate(labels):  # the rules of labels.txt: no name spoofs a line
        if problem := label_name_problem(name):
            raise ValueError(f"{path}: field 'labels' item {index} {name!r} {problem}")
    crop = _positive_int(meta, "crop_size", path, 8, MAX_IMAGE_SIZE)
    _positive_int(meta, "image_size", path, crop, MAX_IMAGE_SIZE)
    if meta.get("channels") not in (1, 3):
        raise ValueError(f"{path}: field 'channels' must be 1 or 3, got {meta.get('channels')!r}")
    if meta.get("step") is not None:
        _positive_int(meta, "step", path, 0)
    if meta.get("threshold") is not None:
        runs.check_threshold(meta["threshold"], path)
    return meta


def export_family(meta: dict[str, Any], where: Path, key: str = "family") -> ModelFamily:
    """The model family of an export, or of a member entry of an ensemble's (``key`` names
    it in errors; exports before the ``family`` field: a head when it names an embedding)."""
    from facefold.models.families import FAMILIES as families

    return families[export_family_name(meta, where, key)]


def export_family_name(meta: dict[str, Any], where: Path, key: str = "family") -> str:
    """The name of an export's model family, checked (see :func:`export_family`)."""
    name = meta.get("family") or ("embedding" if meta.get("embedding") else "cnn")
    if name not in FAMILIES:
        raise ValueError(f"{where}: field '{key}' must be one of {', '.join(FAMILIES)}, "
                         f"got {name!r}")
    return name


def _load_export(folder: Path) -> LoadedModel:
    """An export folder (``export.json`` + model file) as a model."""
    meta = read_export_info(folder)
    where = folder / runs.EXPORT_FILE
    if meta.get("ensemble") and (meta.get("family") != ENSEMBLE
                                 or meta.get("model_file") is None):
        return _load_members_export(folder, meta, where)  # not one file: its members' exports
    model_path = folder / runs.MODEL_FILES[meta["format"]]
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} is missing from the export {folder}")
    labels = list(meta["labels"])
    if meta["format"] == "tflite":
        return _tflite_model(meta, model_path, folder, ModelInfo(
            labels, int(meta["image_size"]), int(meta["crop_size"]), int(meta["channels"]),
            meta["format"], folder, meta.get("step"), meta.get("threshold"),
            runs.read_centroids(folder, len(labels)), meta.get("embedding")))
    start_tensorflow()
    from facefold.models.inference import keras_infer

    family = export_family(meta, where)
    model = None
    if meta["format"] == "keras":
        import keras

        model = keras.models.load_model(model_path, compile=False)
        infer = keras_infer(model)
    else:
        infer = savedmodel_infer(model_path)
    inputs, feed = _export_inputs(meta, family, folder, where)
    ensemble = family.name == ENSEMBLE
    if ensemble:
        infer = _by_name(infer, list(inputs))
    _check_export_outputs(infer, inputs, ensemble, len(labels), where)
    info = ModelInfo(labels, int(meta["image_size"]), int(meta["crop_size"]),
                     int(meta["channels"]), meta["format"], folder, meta.get("step"),
                     meta.get("threshold"), runs.read_centroids(folder, len(labels)),
                     meta.get("embedding"), family.name, meta["format"])
    return LoadedModel(info, lambda images: infer(feed(images)), model,
                       weights=_export_weights(meta, where), model_infer=infer,
                       model_inputs=feed)


def _tflite_model(meta: dict[str, Any], model_path: Path, folder: Path,
                  info: ModelInfo) -> LoadedModel:
    """The ``.tflite`` file of an export (``meta``, its checked ``export.json`` in ``folder``)
    by the LiteRT interpreter, as the model ``info`` describes: pictures in, or the chips an
    embedding head's export takes (cut here by dlib), names out; an ensemble's file takes
    each input by name. No TensorFlow."""
    where = folder / runs.EXPORT_FILE
    infer, shapes, runtime = tflite_infer(model_path)
    ensemble = export_family_name(meta, where) == ENSEMBLE
    feeds = _lite_feeds(meta, folder, where)
    if ensemble:
        if set(feeds) != set(shapes):
            raise ValueError(f"{model_path} takes the inputs {', '.join(shapes)} but {where} "
                             f"describes {', '.join(feeds)}: export the model again")
        infer = _by_name(infer, list(shapes))
        feed: Callable[[np.ndarray], Any] = lambda images: {  # noqa: E731
            name: member_feed(images) for name, member_feed in feeds.items()}
    else:
        (feed,) = feeds.values()
    inputs = {name: {"shape": shape, "dtype": "uint8"} for name, shape in shapes.items()}
    _check_export_outputs(infer, inputs, ensemble, len(info.labels), where)
    info = dataclasses.replace(info, embedding=meta.get("embedding"),
                               family=export_family_name(meta, where), runtime=runtime)
    return LoadedModel(info, lambda images: infer(feed(images)),
                       weights=_export_weights(meta, where), model_infer=infer,
                       model_inputs=feed)


def _lite_feeds(meta: dict[str, Any], folder: Path, where: Path
                ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Pictures -> each input of a TFLite export by input name, without TensorFlow (what
    :func:`_export_inputs` asks of the families): a CNN takes the pictures themselves
    (``image``), an embedding head the chips cut here (``chips``); an ensemble's members
    with inputs of the same name share one."""
    ensemble = export_family_name(meta, where) == ENSEMBLE
    entries = _member_entries(meta, where) if ensemble else [meta]
    feeds: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for index, entry in enumerate(entries):
        key = f"ensemble.members[{index}].family" if ensemble else "family"
        family = export_family_name(entry, where, key)
        if ensemble and family == ENSEMBLE:
            raise ValueError(f"{where}: ensemble member {index} is an ensemble itself")
        embedding = entry.get("embedding")
        if family != "embedding":
            feeds.setdefault("image", lambda images: images)
        elif not takes_chips(embedding):
            raise ValueError(f"{where}: an embedding head's TFLite export takes chips "
                             "('embedding.input' must be 'chips')")
        else:
            feeds.setdefault("chips", chip_inputs(
                check_embedding_meta(embedding, folder, False), folder))
    if not feeds:
        raise ValueError(f"{where}: field 'ensemble.members' lists no member")
    return feeds


def _export_weights(meta: dict[str, Any], where: Path) -> dict[str, float] | None:
    """A weighted ensemble's member weights from its ``export.json`` (None: not one)."""
    if export_family_name(meta, where) != ENSEMBLE:
        return None
    return runs.check_member_weights(_member_entries(meta, where), where)


def _load_kept_export(run_dir: Path, export_dir: Path) -> LoadedModel:
    """A run by the TFLite export it keeps of its newest checkpoint (``RUN/lite``): the
    export's network with the run's own labels, image size, threshold and centroids, and the
    run folder as the source (where enrolled people are kept)."""
    meta = read_export_info(export_dir)
    labels = runs.read_run_labels(run_dir)
    if list(meta["labels"]) != labels:
        raise ValueError(f"{export_dir / runs.EXPORT_FILE} lists other people than "
                         f"{run_dir / runs.LABELS_FILE}: export the run again")
    if meta.get("embedding") is not None:  # the installed chips are the head's, as for a run
        check_embedding_meta(meta["embedding"], run_dir)
    step, _ = runs.latest_checkpoint(run_dir)  # kept_export found it
    info = ModelInfo(labels, int(meta["image_size"]), int(meta["crop_size"]),
                     int(meta["channels"]), "run", run_dir, step, runs.read_threshold(run_dir),
                     runs.read_centroids(run_dir, len(labels)))
    return _tflite_model(meta, export_dir / runs.MODEL_FILES["tflite"], export_dir, info)


def _by_name(infer: Infer, names: list[str]) -> Infer:
    """``infer`` of an ensemble's model file, which takes exactly ``names`` (a clear error for
    anything else, before the model sees it)."""
    def checked(inputs: Any) -> dict[str, np.ndarray]:
        check_named_inputs(inputs, names, "of its model file")
        return infer(inputs)

    return checked


def _member_entries(meta: dict[str, Any], where: Path) -> list[dict[str, Any]]:
    """``ensemble.members`` of an ensemble's ``export.json``, checked to be a list of
    objects."""
    entries = meta["ensemble"].get("members") if isinstance(meta.get("ensemble"), dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{where}: field 'ensemble.members' must be a list of objects")
    return entries


def _load_members_export(folder: Path, meta: dict[str, Any], where: Path) -> LoadedModel:
    """An ensemble's export written before ensembles were one file: an export of each member
    in ``members/<preset>/``, loaded and averaged as a run's members are."""
    entries = _member_entries(meta, where)
    members = {runs.safe_name(str(m.get("preset"))):
               runs.contained(folder, m.get("export"), "ensemble.members.export", where)
               for m in entries}
    return _load_ensemble(folder, members, meta["format"], meta.get("step"),
                          runs.check_member_weights(entries, where),
                          threshold=meta.get("threshold"))


def _export_inputs(meta: dict[str, Any], family: ModelFamily, folder: Path, where: Path
                   ) -> tuple[dict[str, dict[str, Any]], Callable[[np.ndarray], Any]]:
    """The inputs of an export's model by name, as the family (an ensemble: each member's
    family, from its ``ensemble.members`` entry) describes them, and pictures -> what the
    model takes: one array, or an ensemble's dict of arrays by input name (members with
    inputs of the same name share one: every CNN member takes ``image``)."""
    size, channels = int(meta["image_size"]), int(meta["channels"])
    if family.name != ENSEMBLE:
        embedding = meta.get("embedding")
        feed = family.picture_inputs(embedding, folder)  # checks the embedding entry
        model_input = family.export_input(embedding, size, channels)
        return {model_input["name"]: model_input}, feed
    inputs: dict[str, dict[str, Any]] = {}
    feeds: dict[str, Callable[[np.ndarray], Any]] = {}
    for index, entry in enumerate(_member_entries(meta, where)):
        member = export_family(entry, where, f"ensemble.members[{index}].family")
        if member.name == ENSEMBLE:
            raise ValueError(f"{where}: ensemble member {index} is an ensemble itself")
        embedding = entry.get("embedding")
        member_feed = member.picture_inputs(embedding, folder)
        model_input = member.export_input(embedding, size, channels)
        name = model_input["name"]
        if inputs.setdefault(name, model_input) != model_input:
            raise ValueError(f"{where}: ensemble members take different inputs named '{name}'"
                             ", which one model file cannot have")
        feeds.setdefault(name, member_feed)
    if not inputs:
        raise ValueError(f"{where}: field 'ensemble.members' lists no member")
    return inputs, lambda images: {name: feed(images) for name, feed in feeds.items()}


def _check_export_outputs(infer: Infer, inputs: dict[str, dict[str, Any]], by_name: bool,
                          classes: int, where: Path) -> None:
    """Run the model once on zero inputs of their declared shapes (``by_name``: a dict of
    them, an ensemble's; else its one input): its logits must be one per label (a SavedModel
    or TFLite file says so only when it runs)."""
    zeros = {name: np.zeros([1, *entry["shape"][1:]], entry["dtype"])
             for name, entry in inputs.items()}
    logits = np.asarray(infer(zeros if by_name else next(iter(zeros.values())))["logits"])
    if logits.ndim != 2 or logits.shape[1] != classes:
        raise ValueError(f"{where} lists {classes} people but the model gives "
                         f"{logits.shape[1:]} outputs: the label list does not belong to "
                         "this model")
