"""One typed configuration, resolved in layers: defaults < preset < TOML file < command line.

A :class:`Config` has three sections — ``model`` (architecture and input),
``augment`` (training-time jitter) and ``train`` (steps, batch, optimizer,
precision, seed). A *preset* is a name plus a few overrides of those sections
(see :mod:`facefold.models.presets`). A TOML file may name a base preset and
override any key::

    preset = "seed"
    [model]
    dense_units = [96, 128]
    [train]
    steps = 2000

Unknown sections or keys are errors, and invariants are checked when the
config is built, so a typo never silently trains the wrong model. The resolved
config is written as ``config.json`` into every run folder; a run can always be
rebuilt from its own folder with :func:`Config.from_dict`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefold.choices import PRECISION_SETTINGS

# Pretrained embeddings a head can learn on (model.embedding), and their size.
# "dlib128-pool" is dlib128's network cut before its last layer (the 256-d average pool):
# its head holds that last layer and fine-tunes it (EMBEDDING_TOPS).
EMBEDDING_DIMS = {"dlib128": 128, "dlib128-pool": 256}
# The layers of a pretrained network after an embedding's cut, which a head on it holds
# (initialised from the network's weights) and trains: dlib's fc of 128 units without bias.
# ``lr_scale``: the top's learning rate as a fraction of train.learning_rate, so that a few
# steps cannot undo what the pretrained weights learned (see facefold.models.head).
EMBEDDING_TOPS = {"dlib128-pool": {"units": 128, "lr_scale": 0.01}}
LR_SCHEDULES = ("constant", "cosine")
# How the CNN resizes its crop to model.input_size (see facefold.models.cnn.RESIZE_ARGS):
# bilinear widened to the scale (antialiased), plain bilinear (samples, so it aliases when it
# shrinks), or the mean of each input area.
RESIZE_METHODS = ("antialias", "bilinear", "area")
# How an ensemble weighs its members (model.member_weights): the plain mean, or weights chosen
# on an inner split of the training shards (see facefold.train.ensemble).
MEMBER_WEIGHTS = ("equal", "inner")
# The model families (model.family; see facefold.models.families): a CNN on pixels, a head on a
# pretrained embedding, an ensemble of registered presets.
FAMILIES = ("cnn", "embedding", "ensemble")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and input of a CNN (defaults: the 2016 model).

    The model sees a ``crop_size`` square crop of the stored image with
    ``channels`` channels (3 = RGB, 1 = gray), values in [0, 1]; it resizes
    the crop to ``input_size`` and standardizes each image itself, so the same
    preprocessing holds at training and prediction time.

    The modern options are all off by default, so the 2016 model is unchanged:
    ``batch_norm`` (conv without bias -> batch norm -> ReLU), ``residual``
    (every stage after the first: two 3x3 convs plus a shortcut, a 1x1
    projection where the width changes), ``global_pool`` (global average
    pooling instead of flatten),
    ``dropout`` (rate before the logits), ``drop_path`` (stochastic depth, Huang
    et al. 2016: in training each image skips a residual stage's two convs, keeping
    only its shortcut, with this probability in the last stage and linearly less
    in earlier ones) and ``tta_flip`` (at inference the
    logits are the mean over the image and its mirror; see
    :mod:`facefold.models.cnn`). ``tta_crops`` makes inference average the logits of seven
    windows of the stored image instead of the centre crop alone: the centre crop, the four
    crops shifted diagonally by a few pixels, and the centre squares a few pixels larger and
    smaller, each resized like the crop (see :func:`facefold.models.inference.tta_windows`;
    with ``tta_flip``, each with its mirror). ``resize`` is how the crop is brought to
    ``input_size`` (one of :data:`RESIZE_METHODS`).

    Logits are linear, or with ``cosine_scale`` > 0 that scale times the cosine
    between the features and each class's weight vector (a cosine classifier,
    for a CNN or a head). ``cosine_margin`` > 0 makes the loss CosFace's: in
    training the true class's cosine is lowered by that margin before the
    softmax, so a crop is only learned once it is nearer its own class by the
    margin; prediction uses the plain cosines.

    ``embedding`` names a pretrained embedding (a key of :data:`EMBEDDING_DIMS`)
    to learn on instead of pixels ("" = a CNN on pixels): the model is then a
    head on each image's cached embedding (see :mod:`facefold.models.head`)
    with ``dense_units`` hidden layers and ``dropout``, and the same logits
    (linear or cosine). ``augment.flip`` draws the
    mirror's embedding half of the time and ``tta_flip`` averages the two;
    the other augment and conv keys do not apply to a head.

    ``family`` names the model family (one of :data:`FAMILIES`): ``"cnn"``, ``"embedding"``
    (which needs ``embedding``) or ``"ensemble"`` (which needs ``members``); each preset sets
    its own.

    ``members`` names registered presets whose models are trained alone and
    averaged (probabilities after each member's own TTA): an ensemble, see
    :mod:`facefold.train.ensemble`; every other model key is then unused.
    ``member_weights`` says how: ``"equal"`` (the plain mean) or ``"inner"``
    (a weighted mean, the weights chosen on an inner split of the training
    shards, never on the held-out ones).
    """

    conv_channels: tuple[int, ...] = (32, 48, 72, 108)
    dense_units: tuple[int, ...] = (1024, 256)
    kernel_size: int = 3
    pool_size: int = 3  # 3x3 max-pool with stride 2, SAME padding
    conv_init_std: float = 0.08  # truncated normal
    dense_init_std: float = 0.02
    dense_bias_init: float = 0.1
    # 2016 formula: loss += weight_decay * tf.nn.l2_loss(w) = weight_decay * sum(w**2) / 2,
    # applied to the hidden dense layers' kernels only.
    weight_decay: float = 0.005
    channels: int = 3
    crop_size: int = 96
    input_size: int = 96
    resize: str = "antialias"  # one of RESIZE_METHODS
    batch_norm: bool = False
    residual: bool = False
    global_pool: bool = False
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last residual stage (0 = off)
    tta_flip: bool = False
    tta_crops: bool = False
    embedding: str = ""
    cosine_scale: float = 0.0  # 0 = linear logits
    cosine_margin: float = 0.0  # CosFace margin, in training only (needs cosine_scale)
    members: tuple[str, ...] = ()
    member_weights: str = "equal"  # equal | inner
    family: str = "cnn"  # one of FAMILIES


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation, applied to pixel values scaled to [0, 1].

    The 2016 code added brightness ±0.4 to 0–255 values, which changes almost
    nothing; facefold applies ±0.4 on the [0, 1] scale (a real jitter) and
    clips to [0, 1] after brightness and contrast.

    Stronger geometry, off by default (then the crop is an exact integer
    window, the 2016 behaviour): ``scale`` is the range of the area of the
    random box *relative to the crop_size x crop_size window* (1 = the
    evaluation crop's field of view; below 1 zooms in, above zooms out; the box
    is cut to the stored image), ``aspect`` the range of its width/height ratio
    (drawn log-uniform), ``rotation`` the largest rotation in degrees; the box
    is resampled bilinearly to the crop. ``erasing`` is the probability that a
    random rectangle (2–25 % of the crop, aspect 1/3–3) of each image is
    replaced by noise, after the colour jitter.

    ``mixup`` and ``cutmix`` (Zhang et al. 2018; Yun et al. 2019), off by
    default, mix each jittered crop with another crop of the batch and its
    label with the other's in the same proportion (the targets become soft):
    mixup blends the pixels, cutmix pastes a random rectangle of the other
    crop. The value is the alpha of the Beta(alpha, alpha) distribution the
    proportion is drawn from, once per batch; with both on, each batch uses
    one of them, half the time each (timm's default). A CNN only.
    """

    flip: bool = True
    brightness: float = 0.4
    contrast: tuple[float, float] = (0.6, 1.4)
    hue: float = 0.04  # fraction of the hue circle, as a YIQ rotation; ignored for 1 channel
    saturation: tuple[float, float] = (0.6, 1.4)  # ignored for 1-channel input
    scale: tuple[float, float] = (1.0, 1.0)
    aspect: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0
    erasing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of the mix; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of the kept area; 0 = off


@dataclass(frozen=True)
class TrainSpec:
    """How long and how to train.

    The defaults are the 2016 recipe: Adam at a constant ``learning_rate``,
    plain cross-entropy. The modern options (see :mod:`facefold.train.optim`):
    ``lr_schedule = "cosine"`` decays the rate to 0 at ``steps``; both schedules
    first ramp it linearly from 0 over ``warmup_steps``; ``adamw_decay`` > 0 is
    AdamW's decoupled weight decay on the conv and dense kernels (each step
    multiplies them by ``1 - lr * adamw_decay``; unrelated to the 2016
    ``model.weight_decay`` loss term); ``label_smoothing`` spreads that much of
    each target over all classes; ``ema_decay`` > 0 keeps an exponential moving
    average of the weights, which evaluation, predictions and exports use (its
    momentum at update ``t`` is ``min(ema_decay, (1 + t) / (10 + t))``, so early
    averages follow the recent weights, not the random initial ones).

    ``teacher`` names a registered preset (a CNN, or an ensemble of CNNs) whose runs of
    the same held-out shards teach this one (knowledge distillation, Hinton et al. 2015):
    every training image's target is ``teacher_weight`` times the teacher's mean
    probabilities over ``teacher_views`` training-augmented views of it plus the rest of the
    one-hot label (see :mod:`facefold.train.distill`). A CNN only; "" = off.
    """

    steps: int = 8000
    eval_every: int = 1000
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    precision: str = "auto"  # auto | float32 | bfloat16
    eval_batch_size: int = 256
    # Measure the zero fraction of every ReLU output every N steps (0 = off);
    # see facefold.train.sparsity. Monitoring only: it never changes training.
    sparsity_every: int = 100
    lr_schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    adamw_decay: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 = off
    teacher: str = ""  # a preset whose same-fold runs give soft targets ("" = off)
    teacher_weight: float = 1.0  # the teacher's share of each target, the label the rest
    teacher_views: int = 8  # augmented views per image the teacher's probabilities average


@dataclass(frozen=True)
class Config:
    """A fully resolved configuration: which preset it came from and its three sections."""

    preset: str = "seed"
    model: ModelSpec = field(default_factory=ModelSpec)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def __post_init__(self) -> None:
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists). ``model.family`` is left out when it is the
        family the model keys imply (:func:`implied_family`): the config is part of every run's
        identity, so files written before the key existed stay the same runs."""
        data = dataclasses.asdict(self)
        if data["model"]["family"] == implied_family(data["model"]):
            del data["model"]["family"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a config from :meth:`to_dict` output (e.g. a run's ``config.json``)."""
        data = dict(data)
        preset = data.pop("preset", "seed")
        return apply_overrides(cls(preset=preset), data, source="config")

    @property
    def family(self) -> str:
        """``model.family``: ``"cnn"`` (learns from pixels), ``"embedding"`` (a head) or
        ``"ensemble"``."""
        return self.model.family

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys of some sections replaced: ``cfg.replace(train={"steps": 10})``."""
        return apply_overrides(self, sections, source="override")


SECTIONS = {"model": ModelSpec, "augment": AugmentSpec, "train": TrainSpec}


def _coerce(value: Any, default: Any, where: str, item_type: type | None = None) -> Any:
    """Convert a TOML/JSON/CLI value to the type of the field's default, or raise.

    ``item_type`` is the item type of a tuple field (needed when its default is empty).
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where} must be a list, got {value!r}")
        item_type = item_type or (type(default[0]) if default else int)
        return tuple(_coerce(v, item_type(), where) for v in value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, float) and is_number:
        return float(value)
    if isinstance(default, int) and is_number and isinstance(value, int):
        return value
    if isinstance(default, str) and isinstance(value, str):
        return value
    raise ValueError(f"{where} must be {type(default).__name__}, got {value!r}")


def apply_overrides(base: Config, overrides: dict[str, Any], source: str) -> Config:
    """Return ``base`` with ``{"section": {"key": value}}`` overrides applied.

    Raises ``ValueError`` for an unknown section or key (naming ``source`` and
    the allowed names) and for a value of the wrong type.
    """
    sections = {name: getattr(base, name) for name in SECTIONS}
    preset = base.preset
    for section_name, values in overrides.items():
        if section_name == "preset":
            preset = values
            continue
        if section_name not in SECTIONS:
            raise ValueError(
                f"{source}: unknown section [{section_name}]; allowed: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ValueError(f"{source}: [{section_name}] must be a table of keys")
        spec = sections[section_name]
        allowed = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        hints = typing.get_type_hints(type(spec))
        changes = {}
        for key, value in values.items():
            if key not in allowed:
                raise ValueError(
                    f"{source}: unknown key '{key}' in [{section_name}]; "
                    f"allowed: {', '.join(allowed)}"
                )
            is_tuple = typing.get_origin(hints[key]) is tuple
            item = typing.get_args(hints[key])[0] if is_tuple else None
            changes[key] = _coerce(value, allowed[key], f"{source}: {section_name}.{key}", item)
        sections[section_name] = dataclasses.replace(spec, **changes)
        if section_name == "model" and "family" not in values and (
                {"members", "embedding"} & set(values)):
            # A file written before model.family (a config.json, a TOML): its model keys say.
            sections["model"] = dataclasses.replace(
                sections["model"], family=implied_family(dataclasses.asdict(sections["model"])))
    return Config(preset=preset, **sections)


def implied_family(model: dict[str, Any]) -> str:
    """The family that a model section's keys imply (``members``: an ensemble, ``embedding``:
    a head, else a CNN): how a config or file written without ``model.family`` is read
    (:func:`apply_overrides`) and when :meth:`Config.to_dict` may leave the key out."""
    if model.get("members"):
        return "ensemble"
    return "embedding" if model.get("embedding") else "cnn"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_config(cfg: Config) -> None:
    """Raise ``ValueError`` naming the key when an invariant does not hold."""
    m, a, t = cfg.model, cfg.augment, cfg.train
    _require(len(m.conv_channels) >= 1, "model.conv_channels needs at least one layer")
    for name in ("conv_channels", "dense_units"):
        widths = getattr(m, name)
        _require(all(w > 0 for w in widths), f"model.{name} must all be > 0, got {widths}")
    _require(m.channels in (1, 3), f"model.channels must be 1 or 3, got {m.channels}")
    _require(m.crop_size >= 8, f"model.crop_size must be >= 8, got {m.crop_size}")
    _require(
        8 <= m.input_size <= m.crop_size,
        f"model.input_size must be between 8 and crop_size ({m.crop_size}), got {m.input_size}",
    )
    _require(m.resize in RESIZE_METHODS, f"model.resize must be one of "
             f"{', '.join(RESIZE_METHODS)}, got {m.resize!r}")
    _require(m.weight_decay >= 0, f"model.weight_decay must be >= 0, got {m.weight_decay}")
    _require(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    _require(0 <= m.drop_path < 1, f"model.drop_path must be in [0, 1), got {m.drop_path}")
    _require(not m.drop_path or (m.residual and len(m.conv_channels) >= 2),
             "model.drop_path drops residual stages: it needs model.residual and 2+ stages")
    _require(not m.tta_crops or (not m.embedding and not m.members), "model.tta_crops crops "
             "the pictures a CNN reads: an embedding head or an ensemble has none of its own")
    _check_embedding_and_members(cfg)
    _require(0 <= a.brightness <= 1, f"augment.brightness must be in [0, 1], got {a.brightness}")
    for name in ("contrast", "saturation"):
        low, high = getattr(a, name)
        _require(0 <= low <= high, f"augment.{name} must be [low, high] with 0 <= low <= high")
    _require(0 <= a.hue <= 0.5, f"augment.hue must be in [0, 0.5], got {a.hue}")
    for name in ("scale", "aspect"):
        low, high = getattr(a, name)
        _require(0 < low <= high, f"augment.{name} must be [low, high] with 0 < low <= high")
    _require(0 <= a.rotation <= 45, f"augment.rotation must be in [0, 45] degrees, "
             f"got {a.rotation}")
    _require(0 <= a.erasing <= 1, f"augment.erasing must be in [0, 1], got {a.erasing}")
    for name in ("mixup", "cutmix"):
        _require(getattr(a, name) >= 0, f"augment.{name} must be >= 0 (0 = off), "
                 f"got {getattr(a, name)}")
    # 0 steps would finish at once and leave a "finished" run of untrained weights.
    _require(t.steps >= 1, f"train.steps must be >= 1, got {t.steps}")
    _require(t.eval_every >= 1, f"train.eval_every must be >= 1, got {t.eval_every}")
    _require(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _require(
        t.sparsity_every >= 0,
        f"train.sparsity_every must be >= 0 (0 = off), got {t.sparsity_every}",
    )
    _require(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
    _require(
        t.precision in PRECISION_SETTINGS,
        f"train.precision must be one of {', '.join(PRECISION_SETTINGS)}, got {t.precision!r}",
    )
    _require(
        t.lr_schedule in LR_SCHEDULES,
        f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {t.lr_schedule!r}",
    )
    _require(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _require(t.adamw_decay >= 0, f"train.adamw_decay must be >= 0 (0 = off), got {t.adamw_decay}")
    _require(0 <= t.label_smoothing < 1,
             f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _require(0 <= t.ema_decay < 1,
             f"train.ema_decay must be in [0, 1) (0 = off), got {t.ema_decay}")
    _require(0 < t.teacher_weight <= 1,
             f"train.teacher_weight must be in (0, 1], got {t.teacher_weight}")
    _require(t.teacher_views >= 1, f"train.teacher_views must be >= 1, got {t.teacher_views}")
    _require(not t.teacher or cfg.family == "cnn", "train.teacher (distillation) teaches a CNN "
             f"on pixels; preset '{cfg.preset}' is an {cfg.family}: make the CNN a member")
    _require(t.teacher != cfg.preset, f"train.teacher '{t.teacher}' is the preset itself")


def _check_embedding_and_members(cfg: Config) -> None:
    """The invariants of an embedding head and of an ensemble."""
    m = cfg.model
    _require(not m.embedding or m.embedding in EMBEDDING_DIMS,
             f"model.embedding must be \"\" (a CNN on pixels) or one of "
             f"{', '.join(EMBEDDING_DIMS)}, got {m.embedding!r}")
    _require(m.cosine_scale >= 0, f"model.cosine_scale must be >= 0 (0 = linear logits), "
             f"got {m.cosine_scale}")
    _require(0 <= m.cosine_margin < 1, f"model.cosine_margin must be in [0, 1) (0 = off), "
             f"got {m.cosine_margin}")
    _require(not m.cosine_margin or m.cosine_scale > 0,
             "model.cosine_margin needs cosine logits: set model.cosine_scale > 0 too")
    if m.embedding:
        _require(m.channels == 3, f"model.channels must be 3 for the {m.embedding} embedding "
                 f"(it reads RGB), got {m.channels}")
        _require(cfg.train.sparsity_every == 0, "train.sparsity_every must be 0 for an "
                 "embedding head (sparsity is measured on conv layers)")
        _require(not cfg.augment.mixup and not cfg.augment.cutmix, "augment.mixup and "
                 "augment.cutmix mix pixels: they must be 0 for an embedding head")
    if m.members:
        _require(len(m.members) >= 2 and len(set(m.members)) == len(m.members),
                 f"model.members must name at least two different presets, got {list(m.members)}")
        _require(not m.embedding, "model.members (an ensemble) and model.embedding exclude "
                 "each other: make the head a member")
    _require(m.member_weights in MEMBER_WEIGHTS,
             f"model.member_weights must be one of {', '.join(MEMBER_WEIGHTS)}, "
             f"got {m.member_weights!r}")
    _require(m.member_weights == "equal" or bool(m.members),
             "model.member_weights applies to ensembles only (set model.members)")
    _require(m.family in FAMILIES,
             f"model.family must be one of {', '.join(FAMILIES)}, got {m.family!r}")
    _require((m.family == "embedding") == bool(m.embedding),
             f"model.family is {m.family!r}, but model.embedding is {m.embedding!r}: an "
             "embedding head (family \"embedding\") and only it names its embedding")
    _require((m.family == "ensemble") == bool(m.members),
             f"model.family is {m.family!r}, but model.members is {list(m.members)}: an "
             "ensemble (family \"ensemble\") and only it names its members")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config TOML file; errors name the file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
