"""Model families as types: what differs between a CNN, an embedding head and an ensemble.

Every config names its family (``model.family``, :attr:`facefold.config.Config.family`),
and :func:`family_of` gives its :class:`ModelFamily`. The trainer, the executor,
predict and export ask the family — for the inputs of a dataset, the network,
the batches, what the run's identity must add (:func:`identity_of`), the runs a
model is made of or learns from and their folders, the runs a finished one
combines, the inference model and the input of an export — instead of branching
on config keys:

- :class:`CNN` learns from pixels (:mod:`facefold.models.cnn`): inputs are the
  decoded images, batches jittered crops, inference takes uint8 images; a
  distilled one (``train.teacher``) depends on its teachers' runs.
- :class:`EmbeddingHead` learns on a pretrained embedding
  (:mod:`facefold.models.head`, :mod:`facefold.embeddings`): inputs are cached
  embeddings, the identity holds the embedding's model version, and inference
  embeds each picture first.
- :class:`Ensemble` trains nothing itself: it names member presets
  (:meth:`Ensemble.members`) whose probabilities are averaged, equally or with
  weights chosen on an inner split of the training shards
  (:mod:`facefold.train.ensemble`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from facefold import runs
from facefold.config import EMBEDDING_DIMS, EMBEDDING_TOPS, Config
from facefold.data.augment import mixes
from facefold.data.pipeline import (
    BatchMaker,
    Split,
    batch_maker,
    decode_shards,
    embedding_batch_maker,
    embedding_evaluation_batches,
    evaluation_batches,
)
from facefold.embeddings.pictures import (
    CHIPS,
    check_embedding_meta,
    chip_inputs,
    embed_images,
    embedder,
    takes_chips,
)
from facefold.embeddings.shards import EmbeddingSplit, embed_shards
from facefold.log import Log
from facefold.models.cnn import build_model
from facefold.models.head import build_head
from facefold.models.inference import (
    chip_inference_model,
    head_inference_model,
    inference_model,
)
from facefold.models.presets import member_configs, teacher_configs


class ModelFamily:
    """The interface every family implements (an ensemble has no network of its own: it
    implements the identity, dependency and combining methods, not the network ones)."""

    name: ClassVar[str]
    # The family in messages: "preset 'x' is an <article_name>".
    article_name: ClassVar[str]
    # Whether the network has conv layers, which activations, sparsity and the training bench
    # measure: a CNN's does; a head is dense layers, an ensemble has no network of its own.
    has_conv_layers: ClassVar[bool] = False
    # Whether the network reads the pictures themselves, so that inference may crop them (crop
    # TTA, model.tta_crops): a CNN's does; a head reads embeddings, an ensemble has none.
    reads_pictures: ClassVar[bool] = False
    # The keys of :meth:`identity` whose values the installed extra gives, not the config (an
    # embedding's model version): a reader of finished runs, which may lack the extra, takes
    # them as recorded (``identity(config, installed=False)`` leaves them out).
    installed_keys: ClassVar[tuple[str, ...]] = ()

    def check_available(self, config: Config) -> None:
        """Raise, before any work, when ``config`` needs an extra that is not installed."""

    def require_conv_layers(self, config: Config, what: str) -> None:
        """Raise ``ValueError`` when ``config``'s network has no conv layers: ``what`` (a
        command or flag) needs them."""
        if not self.has_conv_layers:
            raise ValueError(f"{what} works on CNN presets only; preset '{config.preset}' is "
                             f"an {self.article_name}")

    def soft_targets(self, config: Config) -> bool:
        """Whether ``config``'s training batches carry soft targets (a mixing augmentation:
        mixup or cutmix) instead of labels; evaluation batches never do."""
        return mixes(config.augment)

    def leaf_runs(self, run_dir: Path) -> list[Path]:
        """The run folders whose networks a finished run in ``run_dir`` consists of: itself,
        or the runs it combines as it records them (:meth:`combined_runs`)."""
        return list((self.combined_runs(run_dir) or {"": run_dir}).values())

    def input_key(self, config: Config) -> tuple:
        """Which inputs ``config`` needs; configs with equal keys share them."""
        raise self._none("inputs")

    def load_inputs(self, data_dir: str | Path, config: Config, log: Log) -> list[Split]:
        """The inputs of every shard of a dataset, in shard order."""
        raise self._none("inputs")

    def build(self, config: Config, num_classes: int, precision: str) -> keras.Model:
        """The untrained network (logits out), its initial weights fixed by the seed."""
        raise self._none("network")

    def training_batches(self, split: Split, config: Config, num_classes: int,
                         targets: np.ndarray | None = None) -> BatchMaker:
        """``step -> (x, y)``: the training batch of a step, a pure function of it (``y``
        int labels below ``num_classes``, or soft targets over them; ``targets`` (N,
        ``num_classes``), one row per image of ``split``, replace its labels: a teacher's)."""
        raise self._none("batches")

    def evaluation_batches(self, split: Split, config: Config) -> tf.data.Dataset:
        """The held-out inputs in order, as the model is evaluated on them."""
        raise self._none("batches")

    def inference_inputs(self, split: Split, config: Config) -> np.ndarray:
        """What the inference model of :meth:`inference` takes for the images of ``split``
        (the inputs :meth:`load_inputs` gave), as :meth:`evaluation_batches` evaluates them."""
        raise self._none("inputs")

    def identity(self, config: Config, installed: bool = True) -> dict[str, Any]:
        """What a run's identity must hold besides data, folds and config (see
        :func:`identity_of`); without ``installed``, all but :attr:`installed_keys`."""
        return {}

    def networks(self, config: Config) -> list[Config]:
        """The configs that train a network for a run of ``config``: ``[config]`` (an
        ensemble: its members)."""
        return [config]

    def network_runs(self, config: Config, out: str | Path) -> list[tuple[Config, Path]]:
        """:meth:`networks` with the run folder of each, for a run in ``out``: ``out`` itself
        (an ensemble: its members' folders in ``out``)."""
        return [(config, Path(out))]

    def weighs_on_inner_split(self, config: Config) -> bool:
        """Whether the model averages networks with weights chosen on an inner split of the
        training shards (an ensemble with ``model.member_weights = "inner"``)."""
        return False

    def features_are_fixed(self, config: Config) -> bool:
        """Whether the features the ``cosine`` and ``nearest`` scores compare are the same
        whoever the network was trained on (a head with no layer before its logits, on an
        embedding it does not fine-tune): then ``fit`` may calibrate those scores on the
        model's own gallery instead of on models trained without some people
        (:func:`facefold.evaluate.openset_cv.gallery_scores`)."""
        return False

    def dependencies(self, config: Config) -> list[Config]:
        """The configs of other presets' runs, on the same held-out shards, that a run of
        ``config`` is made of or learns from (an ensemble's members, a distilled CNN's
        teachers); empty for a run that stands alone."""
        return []

    def dependency_runs(self, config: Config, out: str | Path,
                        handed: Mapping[str, Path] | None = None) -> list[tuple[Config, Path]]:
        """Each of :meth:`dependencies` with its run folder: the one handed over in ``handed``
        (by preset name), else the one a run in ``out`` trains it into
        (:meth:`dependency_dir`)."""
        handed = dict(handed or {})
        return [(d, Path(handed.get(d.preset) or self.dependency_dir(out, d.preset)))
                for d in self.dependencies(config)]

    def dependency_dir(self, out: str | Path, preset: str) -> Path:
        """Where a run in ``out`` trains the dependency ``preset`` it was not handed."""
        raise self._none("dependencies")

    def combined_runs(self, run_dir: Path) -> dict[str, Path] | None:
        """``{preset: run folder}`` of the runs whose outputs a finished run of this family
        combines, as ``run_dir`` records them (an ensemble's members); None for a network of
        its own, which is loaded from its checkpoint."""
        return None

    def notes(self, train_split: Split, eval_split: Split) -> tuple[dict[str, Any], str]:
        """Facts about a run's inputs for its ``run.json`` and a log line ("" for none)."""
        return {}, ""

    def inference(self, model: keras.Model, config: Config, image_size: int,
                  run_info: dict[str, Any]) -> tuple[keras.Model, dict[str, Any] | None]:
        """The trained ``model`` wrapped for inference (``{"logits", "features"}`` out) and
        what an export must record to feed it (None when it takes the pictures)."""
        raise self._none("inference model")

    def picture_inputs(self, meta: dict[str, Any] | None,
                       where: Path) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 pictures (N, S, S, C) -> what the wrapped model takes, so that its inference
        names pictures (``meta`` as :meth:`inference` or an export recorded it, checked;
        ``where`` names it in errors): the pictures themselves by default."""
        return lambda images: images

    def export_model(self, model: keras.Model, meta: dict[str, Any] | None
                     ) -> tuple[keras.Model, dict[str, Any] | None]:
        """What an export writes for a run whose :meth:`inference` gave ``model`` and
        ``meta``: the model to save and the ``embedding`` entry of its ``export.json``
        (by default both as they are)."""
        return model, meta

    def export_input(self, meta: dict[str, Any] | None, image_size: int,
                     channels: int) -> dict[str, Any]:
        """The ``input`` entry of ``export.json``."""
        return {
            "name": "image", "dtype": "uint8",
            "shape": [None, image_size, image_size, channels],
            "meaning": "the whole square face image (shorter side resized to image_size, "
                       "centre square); the model takes the central crop_size window itself",
        }

    def _none(self, what: str) -> TypeError:
        return TypeError(f"the {self.name} family has no {what} of its own")


class CNN(ModelFamily):
    """A CNN on pixels (the 2016 model, its ablations, the modern presets)."""

    name = "cnn"
    article_name = "CNN"
    has_conv_layers = True
    reads_pictures = True

    def input_key(self, config: Config) -> tuple:
        return "pixels", config.model.channels

    def load_inputs(self, data_dir: str | Path, config: Config, log: Log) -> list[Split]:
        return decode_shards(data_dir, config.model.channels)

    def build(self, config: Config, num_classes: int, precision: str) -> keras.Model:
        return build_model(config.model, num_classes, precision, config.train.seed)

    def training_batches(self, split: Split, config: Config, num_classes: int,
                         targets: np.ndarray | None = None) -> BatchMaker:
        return batch_maker(split, config.augment, config.model.crop_size,
                           config.train.batch_size, config.train.seed, num_classes, targets)

    def soft_targets(self, config: Config) -> bool:
        # A distilled run learns its teacher's probabilities.
        return super().soft_targets(config) or bool(config.train.teacher)

    def identity(self, config: Config, installed: bool = True) -> dict[str, Any]:
        # A distilled run learned from its teacher's runs: another teacher, another run.
        teachers = self.dependencies(config)
        return {"teachers": [t.to_dict() for t in teachers]} if teachers else {}

    def dependencies(self, config: Config) -> list[Config]:
        return teacher_configs(config)  # a distilled CNN's teachers (none without train.teacher)

    def dependency_dir(self, out: str | Path, preset: str) -> Path:
        return runs.teacher_dir(out, preset)

    def evaluation_batches(self, split: Split, config: Config) -> tf.data.Dataset:
        return evaluation_batches(split, config.model.crop_size, config.train.eval_batch_size)

    def inference_inputs(self, split: Split, config: Config) -> np.ndarray:
        return split.images  # the whole uint8 images: the inference model crops them itself

    def inference(self, model: keras.Model, config: Config, image_size: int,
                  run_info: dict[str, Any]) -> tuple[keras.Model, dict[str, Any] | None]:
        return inference_model(model, config.model, image_size), None


class EmbeddingHead(ModelFamily):
    """A head on a pretrained face embedding (``model.embedding``, e.g. ``dlib128``)."""

    name = "embedding"
    article_name = "embedding head"
    installed_keys = ("embedding",)

    @staticmethod
    def views(config: Config) -> int:
        """Embeddings per image a config needs: 2 (image and mirror) for flip or flip TTA."""
        return 2 if config.augment.flip or config.model.tta_flip else 1

    def check_available(self, config: Config) -> None:
        embedder(config.model.embedding)

    def features_are_fixed(self, config: Config) -> bool:
        # The features are the mean of the views' embeddings unless hidden layers or a
        # fine-tuned top transform them (facefold.models.head).
        return not config.model.dense_units and config.model.embedding not in EMBEDDING_TOPS

    def input_key(self, config: Config) -> tuple:
        return "embedding", config.model.embedding, self.views(config)

    def load_inputs(self, data_dir: str | Path, config: Config, log: Log) -> list[Split]:
        return embed_shards(data_dir, config.model.embedding, self.views(config), log=log)

    def build(self, config: Config, num_classes: int, precision: str) -> keras.Model:
        # A cut embedding's head starts from the pretrained layers after the cut.
        top = (embedder(config.model.embedding).top_kernel()
               if config.model.embedding in EMBEDDING_TOPS else None)
        return build_head(config.model, num_classes, precision, config.train.seed, top)

    def training_batches(self, split: Split, config: Config, num_classes: int,
                         targets: np.ndarray | None = None) -> BatchMaker:
        return embedding_batch_maker(split, config.augment.flip, config.train.batch_size,
                                     config.train.seed)

    def evaluation_batches(self, split: Split, config: Config) -> tf.data.Dataset:
        return embedding_evaluation_batches(split, 2 if config.model.tta_flip else 1,
                                            config.train.eval_batch_size)

    def inference_inputs(self, split: Split, config: Config) -> np.ndarray:
        return split.images[:, : 2 if config.model.tta_flip else 1]  # (N, views, D)

    def identity(self, config: Config, installed: bool = True) -> dict[str, Any]:
        # A head learned on one version's embeddings is meaningless on another's.
        if not installed:
            return {}
        model = embedder(config.model.embedding)
        entry: dict[str, Any] = {"name": model.name, "model_version": model.version}
        if config.model.embedding in EMBEDDING_TOPS:  # how the head fine-tunes the top
            entry["top"] = EMBEDDING_TOPS[config.model.embedding]
        return {"embedding": entry}

    def notes(self, train_split: Split, eval_split: Split) -> tuple[dict[str, Any], str]:
        if not isinstance(train_split, EmbeddingSplit):
            return {}, ""
        counts = {"train": int(train_split.fallback.sum()),
                  "eval": int(eval_split.fallback.sum())}  # type: ignore[attr-defined]
        message = ""
        if counts["train"] or counts["eval"]:
            message = (f"landmark fit failed on {counts['train']} of {len(train_split)} "
                       f"training and {counts['eval']} of {len(eval_split)} held-out images "
                       "(whole image used as the chip)")
        return {"landmark_fallbacks": counts}, message

    def inference(self, model: keras.Model, config: Config, image_size: int,
                  run_info: dict[str, Any]) -> tuple[keras.Model, dict[str, Any] | None]:
        spec = config.model
        recorded = run_info.get("embedding") or {}
        meta = {"name": spec.embedding, "model_version": recorded.get("model_version", ""),
                "views": 2 if spec.tta_flip else 1, "dim": EMBEDDING_DIMS[spec.embedding]}
        return head_inference_model(model, spec), meta

    def picture_inputs(self, meta: dict[str, Any] | None,
                       where: Path) -> Callable[[np.ndarray], np.ndarray]:
        if takes_chips(meta):
            return chip_inputs(check_embedding_meta(meta, where, False), where)
        meta = check_embedding_meta(meta, where)
        # Computed, not cached: pictures to name are new.
        return lambda images: embed_images(images, meta["name"], meta["views"])[0]

    def export_model(self, model: keras.Model, meta: dict[str, Any] | None
                     ) -> tuple[keras.Model, dict[str, Any] | None]:
        # The embedding's network goes into the file: the export takes chips, not vectors.
        assert meta is not None  # an embedding head's inference always has its meta
        installed = embedder(meta["name"])
        network = installed.descriptor_network()
        entry = {**meta, "input": CHIPS, "chip_size": int(network.input_shape[1])}
        if meta["model_version"] != installed.version:  # accepted by check_embedding_meta
            entry["note"] = (
                f"the head learned on vectors of model version {meta['model_version'][:12]}…; "
                f"this file computes them with the network of version {installed.version[:12]}…"
                ", the same weights (vectors equal to float32 rounding)")
        return chip_inference_model(model, network, meta["views"]), entry

    def export_input(self, meta: dict[str, Any] | None, image_size: int,
                     channels: int) -> dict[str, Any]:
        assert meta is not None  # an embedding head's inference always has its meta
        if takes_chips(meta):
            side = meta["chip_size"]
            return {
                "name": "chips", "dtype": "uint8",
                "shape": [None, meta["views"], side, side, 3],
                "meaning": f"the aligned {side}x{side} RGB {meta['name']} chip of each face "
                           "crop (the whole square image_size picture), then the chip of the "
                           "mirrored crop when views is 2. The chips are cut outside this file "
                           "(dlib's landmark fit and get_face_chip, C++): "
                           "facefold.embeddings.pictures.chip_images, or Predictor.chips of this "
                           "folder; the file holds the descriptor network and the head",
            }
        return {
            "name": "embedding", "dtype": "float32",
            "shape": [None, meta["views"], meta["dim"]],
            "meaning": f"the {meta['name']} embedding of each face crop (the whole square "
                       "image_size picture), then of its mirror when views is 2",
        }


class Ensemble(ModelFamily):
    """Registered presets trained alone, their probabilities averaged (``model.members``;
    how they are weighed: ``model.member_weights``)."""

    name = "ensemble"
    article_name = "ensemble"

    # How a weighted ensemble's weights are chosen on its inner shard
    # (facefold.train.ensemble.fit_weights). Part of its identity, so a run weighed by another
    # rule is never reused as if this one had chosen its weights.
    INNER_WEIGHTS_RULE = "most inner accuracy on a 1/20 simplex grid, then least log-loss"

    def identity(self, config: Config, installed: bool = True) -> dict[str, Any]:
        if not self.weighs_on_inner_split(config):
            return {}
        return {"member_weights_rule": self.INNER_WEIGHTS_RULE}

    def weighs_on_inner_split(self, config: Config) -> bool:
        return config.model.member_weights == "inner"

    def members(self, config: Config) -> list[Config]:
        """The members' configs (see :func:`facefold.models.presets.member_configs`)."""
        return member_configs(config)

    def networks(self, config: Config) -> list[Config]:
        return self.members(config)

    def network_runs(self, config: Config, out: str | Path) -> list[tuple[Config, Path]]:
        return self.dependency_runs(config, out)

    def dependencies(self, config: Config) -> list[Config]:
        return self.members(config)

    def dependency_dir(self, out: str | Path, preset: str) -> Path:
        return runs.member_dir(out, preset)

    def combined_runs(self, run_dir: Path) -> dict[str, Path] | None:
        members = runs.ensemble_member_dirs(run_dir)
        if members is None:
            raise FileNotFoundError(f"{run_dir / runs.ENSEMBLE_FILE} is missing: the ensemble "
                                    "has not been combined yet")
        return members

    def check_available(self, config: Config) -> None:
        for member in self.members(config):
            family_of(member).check_available(member)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (CNN(), EmbeddingHead(), Ensemble())}


def family_of(config: Config) -> ModelFamily:
    """The family of a config."""
    return FAMILIES[config.family]


def ensemble_of(config: Config) -> Ensemble:
    """The family of ``config``, which must be an ensemble: ``ValueError`` otherwise (another
    family's dependencies, a CNN's teachers, are no members)."""
    family = family_of(config)
    if not isinstance(family, Ensemble):
        raise ValueError(f"preset '{config.preset}' is not an ensemble")
    return family


def identity_of(
    data: dict[str, Any], eval_shards: Sequence[int], config: Config,
    people: Sequence[str] | None = None, excluded: Sequence[int] = (), installed: bool = True,
) -> dict[str, Any]:
    """The identity of a run of ``config`` (:func:`facefold.runs.run_identity` with what its
    family adds), the one every writer records and every "finished?" check compares.

    ``data`` is the dataset's fingerprint, ``eval_shards`` the held-out shards, ``people``
    the label list of a run on a subset of people, ``excluded`` shards neither trained nor
    evaluated on. ``installed=False`` leaves out what only an installed extra can give (the
    family's :attr:`~ModelFamily.installed_keys`), for readers that may lack it.
    """
    return runs.run_identity(data, eval_shards, config, people,
                             family_of(config).identity(config, installed), excluded)


def leaf_configs(config: Config) -> list[Config]:
    """The configs that train a network: an ensemble's members, else ``[config]``
    (:meth:`ModelFamily.networks`)."""
    return family_of(config).networks(config)


class SplitSource:
    """Loads the inputs of a dataset once per kind (pixels per channel count, or an
    embedding with its views) for every config that asks: :meth:`get`."""

    def __init__(self, data_dir: str | Path, log: Log = print) -> None:
        self.data_dir = Path(data_dir)
        self.log = log
        self._loaded: dict[tuple, list[Split]] = {}

    def get(self, config: Config) -> list[Split]:
        """The inputs of ``config`` (see :meth:`ModelFamily.load_inputs`), loaded once."""
        family = family_of(config)
        key = family.input_key(config)
        if key not in self._loaded:
            self._loaded[key] = family.load_inputs(self.data_dir, config, self.log)
        return self._loaded[key]
