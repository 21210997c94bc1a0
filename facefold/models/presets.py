"""The preset registry: every model variant is a name plus a few values.

``list_presets()`` drives the CLI's choices and the tests (every preset must
build and train). Add a variant with :func:`register_preset`, never by copying
model code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from facefold.config import Config, apply_overrides, load_toml

_PRESETS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}


def register_preset(name: str, description: str, **sections: dict[str, Any]) -> None:
    """Register ``name`` as the default config with ``sections`` overridden.

    ``sections`` maps a section (``model``, ``augment``, ``train``) to the keys it changes.
    """
    if name in _PRESETS:
        raise ValueError(f"preset '{name}' is already registered")
    apply_overrides(Config(preset=name), sections, f"preset '{name}'")  # fail early on typos
    _PRESETS[name] = (description, sections)


def get_preset(name: str) -> Config:
    """The resolved config of a registered preset; ``ValueError`` lists the known ones."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset '{name}'; known presets: {', '.join(list_presets())}")
    return apply_overrides(Config(preset=name), _PRESETS[name][1], f"preset '{name}'")


def list_presets() -> list[str]:
    """Names of all registered presets, in registration order."""
    return list(_PRESETS)


def describe_preset(name: str) -> str:
    """The one-line description given at registration."""
    get_preset(name)
    return _PRESETS[name][0]


def resolve_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    default: str = "seed",
) -> Config:
    """Resolve defaults < preset < TOML file < overrides into one checked :class:`Config`.

    ``preset`` defaults to the file's ``preset`` key, else ``default``.
    """
    file_values = load_toml(file) if file else {}
    name = preset or file_values.get("preset") or default
    cfg = get_preset(name)
    if file_values:
        sections = {k: v for k, v in file_values.items() if k != "preset"}
        cfg = apply_overrides(cfg, sections, str(file))
    if overrides:
        cfg = apply_overrides(cfg, overrides, "command line")
    return cfg


register_preset(
    "seed",
    "the 2016 model: 4 x conv3x3+maxpool (32/48/72/108), dense 1024-256, 96x96 RGB crops",
)
register_preset(
    "reduced",
    "the 2016 cut-down model (1/12 the checkpoint): conv 32/48/72/72, dense 96-128",
    model={"conv_channels": [32, 48, 72, 72], "dense_units": [96, 128]},
)
register_preset(
    "grayscale",
    "the seed model on 1-channel (gray) input; no hue/saturation jitter",
    model={"channels": 1},
)
for _size in (80, 64, 48, 32):
    register_preset(
        f"size{_size}",
        f"the seed model on the 96x96 crop resized to {_size}x{_size}",
        model={"input_size": _size},
    )

# How the crop is shrunk matters most at 32x32 (a third of the crop's side); these two ask
# whether the antialiased resize is what size32 loses to (docs/results.md).
for _method, _how in (("bilinear", "plain bilinear sampling (no antialiasing)"),
                      ("area", "the mean of each 3x3 area")):
    register_preset(f"size32-{_method}", f"ablation: size32 resized by {_how}",
                    model={"input_size": 32, "resize": _method})


def _merged(base: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]
            ) -> dict[str, dict[str, Any]]:
    """``base``'s sections with the keys in ``changes`` replaced or added (neither is modified)."""
    sections = [*base, *(name for name in changes if name not in base)]
    return {name: {**base.get(name, {}), **changes.get(name, {})} for name in sections}


# The modern from-scratch recipe (issue #6). Widths in multiples of 16 (oneDNN's bfloat16
# kernels slow down a lot on 12-channel maps) and residual blocks from stage 2 on keep a
# training step at about the seed's FLOPs and time (docs/models.md, "Modern presets";
# `facefold bench` counts and times both). Rotation stays off: the crops are already aligned
# on five landmarks, and it would double the cost of the crop.
MODERN: dict[str, dict[str, Any]] = {
    "model": {
        "conv_channels": [16, 32, 48, 96], "dense_units": [], "weight_decay": 0.0,
        "batch_norm": True, "residual": True, "global_pool": True, "dropout": 0.2,
        "tta_flip": True,
    },
    "augment": {"scale": [0.7, 1.3], "aspect": [0.8, 1.25], "erasing": 0.25},
    "train": {
        "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_steps": 400,
        "adamw_decay": 0.05, "label_smoothing": 0.1, "ema_decay": 0.999,
    },
}
register_preset(
    "modern",
    "conv 16/32/48/96 with batch norm, residual stages 2-4, global average pooling, dropout "
    "0.2, flip TTA; AdamW 2e-3 (decay 0.05), warm-up 400 + cosine, label smoothing 0.1, "
    "weight average 0.999; box scale 0.7-1.3, aspect 0.8-1.25, erasing 0.25",
    **MODERN,
)
# modern in a quarter of the seed's steps, at a higher peak rate.
FAST = _merged(MODERN, {"train": {"steps": 2000, "eval_every": 500, "learning_rate": 3e-3,
                                  "warmup_steps": 200}})
register_preset(
    "fast",
    "modern in a quarter of the seed's steps: 2,000 steps, eval every 500, peak rate 3e-3, "
    "warm-up 200; a step costs about the seed's",
    **FAST,
)
# Each ablation drops one ingredient of the recipe, so an experiment shows which ones matter.
# They drop it from fast rather than modern: the same question at a quarter of the steps.
ABLATIONS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "fast-nores": ("fast with one conv per stage, no residual blocks (~1/3 the FLOPs)",
                   {"model": {"residual": False}}),
    "fast-nobn": ("fast without batch norm (convs with biases)",
                  {"model": {"batch_norm": False}}),
    "fast-nogap": ("fast flattening the last pool instead of global average pooling",
                   {"model": {"global_pool": False}}),
    "fast-nodrop": ("fast without dropout", {"model": {"dropout": 0.0}}),
    "fast-noaug": ("fast with the seed's augmentation (exact crops, no box jitter or erasing)",
                   {"augment": {"scale": [1.0, 1.0], "aspect": [1.0, 1.0], "erasing": 0.0}}),
    "fast-nosched": ("fast at a constant learning rate (no warm-up, no cosine decay)",
                     {"train": {"lr_schedule": "constant", "warmup_steps": 0}}),
    "fast-nodecay": ("fast with plain Adam (no decoupled weight decay)",
                     {"train": {"adamw_decay": 0.0}}),
    "fast-nosmooth": ("fast without label smoothing", {"train": {"label_smoothing": 0.0}}),
    "fast-noema": ("fast evaluated on the raw weights (no weight average)",
                   {"train": {"ema_decay": 0.0}}),
    "fast-notta": ("fast without flip TTA (trains exactly as fast; only evaluation differs)",
                   {"model": {"tta_flip": False}}),
}
for _name, (_description, _changes) in ABLATIONS.items():
    register_preset(_name, _description, **_merged(FAST, _changes))


# Residual blocks mattered most among fast's ingredients, and fast itself ends about as
# accurate on its augmented training batches as on held-out crops: a hint that capacity
# limits it more than overfitting does (docs/results.md, "Which ingredients of `fast`
# matter: ablations on celeb21, Case #0").
register_preset("fast-wide", "fast with conv 16/48/80/160 (2.3x the FLOPs, 490k parameters)",
                **_merged(FAST, {"model": {"conv_channels": [16, 48, 80, 160]}}))
# A deep ensemble from scratch: the same recipe from another random seed (weights, data order
# and augmentation) makes different mistakes, so averaging the two removes some of them.
register_preset("fast-s1", "fast from random seed 1 (weights, data order, augmentation)",
                **_merged(FAST, {"train": {"seed": 1}}))
# fast-nogap beat fast on every fold of celeb21 (docs/results.md, "Headline: every family on
# all six folds of celeb21"): on aligned crops, where a feature sits carries identity. Two
# of its seeds make the from-scratch ensemble below.
FAST_NOGAP = _merged(FAST, ABLATIONS["fast-nogap"][1])
register_preset("fast-nogap-s1", "fast-nogap from random seed 1",
                **_merged(FAST_NOGAP, {"train": {"seed": 1}}))
# Mixing crops and labels regularizes: the 2,000-step recipe fits its augmented training
# batches about as well as held-out crops, so whether it pays at this length is the question.
register_preset("fast-mixup", "fast-nogap with mixup (alpha 0.2)",
                **_merged(FAST_NOGAP, {"augment": {"mixup": 0.2}}))
register_preset("fast-cutmix", "fast-nogap with cutmix (alpha 1)",
                **_merged(FAST_NOGAP, {"augment": {"cutmix": 1.0}}))
register_preset("fast-droppath", "fast-nogap with stochastic depth: residual stages skipped "
                "with probability 0.033/0.067/0.1 per image in training",
                **_merged(FAST_NOGAP, {"model": {"drop_path": 0.1}}))
# A longer schedule at the same cost: 64x64 input was as good as 96x96 for the 2016 model
# (docs/results.md, "The 2016 ablations on celeb21, Case #0"), and a step costs about
# (64/96)^2 of the FLOPs, so 4,500 steps of it cost about what fast-nogap's 2,000 do.
FAST_64_LONG = _merged(FAST_NOGAP, {"model": {"input_size": 64},
                                    "train": {"steps": 4500, "warmup_steps": 450}})
register_preset("fast-64-long", "fast-nogap on the crop resized to 64x64 for 4,500 steps "
                "(about fast-nogap's FLOPs), eval every 500, warm-up 450", **FAST_64_LONG)
# Does capacity limit the 64x64 recipe? fast-wide's widths, in 3,000 steps so that a run costs
# about fast-64-long's time. It does not: on celeb21 it named about as many crops right as
# fast-64-long, both fitting their training batches nearly whole (docs/results.md, "Wider at
# 64×64, and two 64×64 models together").
FAST_64_WIDE = _merged(FAST_64_LONG, {"model": {"conv_channels": [16, 48, 80, 160]},
                                      "train": {"steps": 3000, "warmup_steps": 300}})
register_preset("fast-64-wide", "ablation: fast-64-long with conv 16/48/80/160, 3,000 steps, "
                "warm-up 300; no better than fast-64-long", **FAST_64_WIDE)
register_preset("fast-64-wide-crops", "fast-64-wide with crop TTA (see fast-64-crops)",
                **_merged(FAST_64_WIDE, {"model": {"tta_crops": True}}))
# Crop TTA (model.tta_crops): inference averages seven windows of each picture, which the
# training jitter (boxes of 0.7-1.3x the area) has taught the model to read. Training is
# exactly fast-64-long's (the same weights), so `facefold evaluate RUN --tta-crops` of a
# fast-64-long run gives its numbers (docs/results.md, "Crop test-time augmentation"). A
# prediction costs seven of fast-64-long's.
register_preset("fast-64-crops", "fast-64-long with crop TTA: inference averages 7 windows "
                "of each picture (7x the inference cost); trains exactly as fast-64-long",
                **_merged(FAST_64_LONG, {"model": {"tta_crops": True}}))
# fast-64-long from another random seed: a third member for the from-scratch ensemble.
register_preset("fast-64-long-s1", "fast-64-long from random seed 1 (weights, data order, "
                "augmentation)", **_merged(FAST_64_LONG, {"train": {"seed": 1}}))
# One network taught by the from-scratch pair (knowledge distillation, Hinton et al. 2015):
# the pair's probabilities on jittered views of the training images say which other people a
# face resembles, which the one-hot label does not. The student is fast-64-long at prediction
# time. It was no better than fast-64-long (docs/results.md, "A third member, and
# distillation"): the pair fits its training images, so its targets carry little beyond the
# label.
register_preset("fast-64-distilled", "ablation: fast-64-long taught by fast-64-duo (same-fold "
                "runs, 8 jittered views per training image); no better than fast-64-long on "
                "two folds", **_merged(FAST_64_LONG, {"train": {"teacher": "fast-64-duo"}}))
# The two recipes that each gained about a point on one fold, together: mixup regularizes, and
# the longer schedule gives it the steps it needs to fit mixed targets. It gained nothing over
# fast-64-long (docs/results.md, "`fast-64-long`, `fast-64-mixup` and `ensemble-64` on six
# folds").
register_preset("fast-64-mixup", "ablation: fast-64-long with mixup (alpha 0.2); no better "
                "than fast-64-long on two folds",
                **_merged(FAST_64_LONG, {"augment": {"mixup": 0.2}}))
# CosFace (Wang et al., 2018): a cosine classifier whose loss asks every crop to be nearer its
# own person than any other by a margin, which also shapes the features the open-set score
# compares. Scale 30 is above the lower bound the paper gives for 18 classes and margin 0.35
# is the paper's; neither is tuned on celeb21. It lost to fast-nogap on the one fold screened
# (docs/results.md, "From-scratch recipes: a one-fold screen"), so it stays as an ablation.
register_preset("fast-cosface", "ablation: fast-nogap with CosFace logits: scale 30 times the "
                "cosine, margin 0.35 in training; below fast-nogap on one fold",
                **_merged(FAST_NOGAP, {"model": {"cosine_scale": 30.0, "cosine_margin": 0.35}}))


# The keys of an ensemble or a distilled model itself, never handed on to its members or
# teachers.
OWN_KEYS = ("family", "members", "member_weights", "teacher", "teacher_weight", "teacher_views")


def _changes_from_preset(config: Config) -> dict[str, dict[str, Any]]:
    """``config``'s changes from its own preset, by section, but for :data:`OWN_KEYS`."""
    base = get_preset(config.preset)
    changes: dict[str, dict[str, Any]] = {}
    for section in ("model", "augment", "train"):
        ours, theirs = getattr(config, section), getattr(base, section)
        changed = {f.name: getattr(ours, f.name) for f in dataclasses.fields(ours)
                   if getattr(ours, f.name) != getattr(theirs, f.name)
                   and f.name not in OWN_KEYS}
        if changed:
            changes[section] = changed
    return changes


def member_configs(config: Config) -> list[Config]:
    """The configs of an ensemble's members (``model.members``), in order.

    A member's config is its own preset's with the ensemble config's changes
    from *its* preset applied (:data:`OWN_KEYS`, which only an ensemble or a distilled
    model has, aside): ``--steps 100`` on an
    ensemble trains every member for 100 steps, as in an experiment where every
    preset gets the same overrides, so a member's run there is the same run.
    Raises ``ValueError`` for a member that is unknown, an ensemble itself, or
    does not accept a change.
    """
    changes = _changes_from_preset(config)
    members = []
    for name in config.model.members:
        member = get_preset(name)
        if member.model.members:
            raise ValueError(f"ensemble member '{name}' is an ensemble itself: list its members")
        members.append(apply_overrides(member, changes, f"ensemble member '{name}'"))
    return members


def teacher_configs(config: Config) -> list[Config]:
    """The configs of the runs that teach a distilled model (``train.teacher``): the teacher
    preset's, or each member's of a teacher ensemble, with the student's changes from its
    own preset applied as for :func:`member_configs` (``--steps 100`` trains the teacher for
    100 steps too). Empty without a teacher. Raises ``ValueError`` for an unknown teacher,
    one with a teacher of its own, or one that is not a CNN or an ensemble of CNNs."""
    if not config.train.teacher:
        return []
    teacher = apply_overrides(get_preset(config.train.teacher), _changes_from_preset(config),
                              f"teacher '{config.train.teacher}'")
    leaves = member_configs(teacher) if teacher.model.members else [teacher]
    for leaf in leaves:
        if leaf.family != "cnn" or leaf.train.teacher:
            raise ValueError(f"teacher '{config.train.teacher}' must be a CNN or an ensemble "
                             f"of CNNs without teachers of their own; '{leaf.preset}' is not")
    if teacher.model.members and teacher.model.member_weights != "equal":
        raise ValueError(f"teacher '{config.train.teacher}' weighs its members by an inner "
                         "split; a teacher averages its members equally")
    return leaves


def register_ensemble(name: str, members: list[str], description: str | None = None,
                      weights: str = "equal") -> None:
    """Register an ensemble of registered presets, its members weighed ``weights``
    (``model.member_weights``); its one point on the accuracy curve sits at the longest
    member's last step (see :mod:`facefold.train.ensemble`). Without a ``description``, one
    is made from the members and how they are weighed."""
    if description is None:
        names = " and ".join(members)
        description = (f"mean probabilities of {names}" if weights == "equal" else
                       f"{names}, their probabilities weighted by accuracy on an inner split "
                       "of the training shards (one more training of each member per fold)")
    steps = max(get_preset(m).train.steps for m in members)
    register_preset(name, description,
                    model={"family": "ensemble", "members": members, "member_weights": weights},
                    train={"steps": steps})


# A head on dlib's pretrained 128-d descriptor (facefold[dlib]; see facefold.embeddings.dlib128).
# Multinomial logistic regression on the embedding: the embedding already separates people,
# and a hidden layer measured no better on celeb21.
DLIB128: dict[str, dict[str, Any]] = {
    "model": {"family": "embedding", "embedding": "dlib128", "dense_units": [],
              "weight_decay": 0.0, "tta_flip": True},
    "train": {"steps": 1000, "eval_every": 250, "learning_rate": 1e-2, "lr_schedule": "cosine",
              "sparsity_every": 0, "precision": "float32"},
}
register_preset(
    "dlib128",
    "softmax head on dlib's pretrained 128-d face embedding (pip install 'facefold[dlib]'); "
    "mirror embedding as flip augmentation and TTA; 1,000 steps",
    **DLIB128,
)
# Is the mirror view worth its cost (a second embedding of every image, in training and in
# every prediction)? Each ablation drops one use of it; docs/results.md has the answer.
register_preset("dlib128-notta", "ablation: dlib128 without flip TTA (a prediction embeds one "
                "view, half the cost)", **_merged(DLIB128, {"model": {"tta_flip": False}}))
register_preset("dlib128-single", "ablation: dlib128 without the mirror at all (one embedding "
                "per image, in training too)",
                **_merged(DLIB128, {"model": {"tta_flip": False}, "augment": {"flip": False}}))
# Fine-tuning dlib's network on the user's people, at the cost of a head: the network cut
# before its fc (dlib128-pool, cached like dlib128), the fc in the head, initialised from
# dlib's weights and trained at 1/100 of the head's learning rate (EMBEDDING_TOPS), and
# CosFace logits, whose margin shapes the fine-tuned 128-d features the open-set score
# compares. It did not beat dlib128 (closed set within noise, a lower open-set AUROC), so it
# stays an ablation: docs/results.md, "dlib128-ft: fine-tuning dlib's fc".
DLIB128_FT = _merged(DLIB128, {"model": {"embedding": "dlib128-pool", "cosine_scale": 30.0,
                                         "cosine_margin": 0.2}})
register_preset(
    "dlib128-ft",
    "ablation: dlib128 fine-tuned (dlib's fc trained from its weights at learning rate 1e-4 "
    "under CosFace logits, scale 30, margin 0.2); closed set within noise of dlib128, "
    "open-set AUROC lower",
    **DLIB128_FT,
)
# The same logits on dlib's 128-d descriptor itself, nothing fine-tuned: what the margin alone
# does, so that dlib128-ft's difference from it is the fine-tuning's.
register_preset("dlib128-cosface", "ablation: dlib128 with dlib128-ft's CosFace logits (scale "
                "30, margin 0.2), dlib's fc not fine-tuned",
                **_merged(DLIB128, {"model": {"cosine_scale": 30.0, "cosine_margin": 0.2}}))
register_ensemble(
    "ensemble", ["fast", "dlib128"],
    "mean probabilities of fast and dlib128 (members reuse the experiment's own runs of them)",
)
# Equal weights let a weak member pull the strong one down; weights chosen on an inner split of
# the training shards cost one more training of each member per fold.
register_ensemble("ensemble-weighted", ["fast", "dlib128"], weights="inner")
# The same two ways of averaging with the best single from-scratch model as the CNN member.
register_ensemble("ensemble-nogap", ["fast-nogap", "dlib128"])
register_ensemble("ensemble-nogap-weighted", ["fast-nogap", "dlib128"], weights="inner")
register_ensemble(
    "fast-x2", ["fast", "fast-s1"],
    "from scratch: mean probabilities of fast and fast-s1 (two seeds of the same recipe)",
)
register_ensemble(
    "fast-nogap-x2", ["fast-nogap", "fast-nogap-s1"],
    "from scratch: mean probabilities of fast-nogap and fast-nogap-s1 (two seeds)",
)
# The longer 64x64 recipes as members: with dlib128 (the best model so far was the mean of a
# from-scratch CNN and the embedding), and the two of them together, from scratch.
register_ensemble("ensemble-64", ["fast-64-long", "dlib128"])
register_ensemble(
    "fast-64-pair", ["fast-64-long", "fast-64-mixup"],
    "from scratch: mean probabilities of fast-64-long and fast-64-mixup",
)
# The best from-scratch model measured: the two 64x64 models err on partly different crops
# (docs/results.md, "Wider at 64×64, and two 64×64 models together").
register_ensemble(
    "fast-64-duo", ["fast-64-long", "fast-64-wide"],
    "from scratch: mean probabilities of fast-64-long and fast-64-wide",
)
register_ensemble(
    "fast-64-duo-crops", ["fast-64-crops", "fast-64-wide-crops"],
    "from scratch: fast-64-duo with crop TTA in each member",
)
register_ensemble(
    "fast-64-trio", ["fast-64-long", "fast-64-wide", "fast-64-long-s1"],
    "from scratch: mean probabilities of fast-64-long, fast-64-wide and fast-64-long-s1",
)
