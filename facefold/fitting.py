"""``facefold fit DATA --preset P --out MODEL``: a model to deploy, trained on every shard.

A cross-validation case is trained on 5/6 of the data; the model to deploy should see all of
it. :func:`fit` trains on every shard (nothing held out) and then *calibrates* the
"unknown" decision honestly, by leave-people-out: the people are split into ``groups``
groups; for each group a model of the same config is trained without that group's people
(on every shard but one, :func:`facefold.runs.calibration_dir`) and scored on the held-out
shard's pictures of the known people and on every picture of the group's people, whom it
never saw. The scores are pooled over the groups, and for each open-set score
(:data:`facefold.models.scores.SCORES`) the threshold that accepts ``far`` of the
strangers is found; the score that names the most known faces right at that rate is chosen
— by the data, per model (:func:`choose_score`: ``nearest`` stands for ``cosine``). The
``nearest`` score names a face by the person whose training pictures are most like it, the
``cosine`` score by the nearest centroid, so people can be enrolled later without retraining
(:meth:`facefold.predict.Predictor.enroll`; they are then named by centroids).
Verification ("same person?") gets its own threshold at ``far`` from pairs of pictures of
the strangers.

**A model whose features do not depend on its training** (a head on an embedding with no
layer before its logits, like ``dlib128``:
:meth:`~facefold.models.families.ModelFamily.features_are_fixed`) has its ``cosine`` and
``nearest`` scores calibrated on its own gallery instead
(:func:`facefold.evaluate.openset_cv.gallery_scores`): every person in turn is a stranger to
all the others, with as many people and pictures to be mistaken for as the model has. The
group models know fewer people with fewer pictures each, and understated the rate at which
the model accepts people it never met (docs/deployment.md, "Strangers it never met").

**Ensembles** fit like one network: each member is fit into ``MODEL/members/<preset>`` and
each calibration group's model is an ensemble of the same members. A weighted ensemble
(``model.member_weights = "inner"``) has its weights chosen by the rule of a
cross-validated one (:func:`facefold.train.ensemble.fit_weights`), on the calibration
models' held-out pictures of their known people: every model weighed was trained without
the pictures it is weighed on. The ensemble's features (centroids, cosine score,
verification) are its members' unit features side by side, so the cosine is the (weighted)
mean of the members' cosines (:func:`facefold.models.outputs.combine_outputs`).

The model folder is an ordinary run folder plus ``threshold.json``, ``centroids.npy`` (of
every person, from all the training pictures), ``pictures.npz`` (the unit features of all
those pictures) and a model card (``model_card.json`` and
``MODEL_CARD.md``: data and its fingerprint, people, the calibration's numbers, versions).
``predict``, ``identify``, ``verify``, ``enroll``, ``export`` and ``serve`` take it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import facefold
from facefold import runs
from facefold.choices import DEFAULT_FAR_BOUND, FAR_BOUNDS
from facefold.config import Config
from facefold.data.pipeline import Split, concat
from facefold.data.records import read_labels, shard_labels
from facefold.evaluate.openset_cv import (
    CaseScores,
    gallery_scores,
    people_in_one_shard,
    scores_of_outputs,
    split_people,
)
from facefold.export import keep_lite
from facefold.locks import locks_folders
from facefold.log import Log
from facefold.models.families import Ensemble, SplitSource, family_of, identity_of
from facefold.models.identities import held_out_rates, identity_interval, threshold_by_bound
from facefold.models.outputs import combine_outputs, softmax
from facefold.models.scores import (
    CENTROID_SCORE,
    SCORES,
    auroc,
    class_centroids,
    person_pictures,
    threshold_at_far,
    unit_rows,
)
from facefold.predict import Predictor
from facefold.predict.strangers import Strangers, crop_strangers, list_strangers
from facefold.report.model_card import fit_summary, format_model_card
from facefold.train.ensemble import weights_and_facts
from facefold.train.plan import check_batch_size, check_calibration_groups, check_image_size
from facefold.train.trainer import CommandPlan, Trainer, versions

# The shards of a network's inputs (a CNN's pictures, an embedding head's embeddings) for
# the people a model is trained on: an ensemble's members take different inputs.
Inputs = Callable[[Config], list[Split]]
# {"logits", "features"} of a model's networks on some pictures, one dict per network.
NetworkOutputs = list[dict[str, np.ndarray]]

DEFAULT_FIT_FAR = 0.01  # one stranger in a hundred accepted as someone
# The score is chosen per model by its own calibration: the best score differs between an
# embedding head and a CNN from scratch (the scores each calibration measured, and the one it
# chose: docs/results.md, "Unknown people with facefold fit").
DEFAULT_GROUPS = 4


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` made: the model folder and its model card (a dict)."""

    model_dir: Path
    card: dict[str, Any]


def people_groups(count: int, groups: int, seed: int) -> list[list[int]]:
    """``groups`` disjoint groups of label indices covering ``count`` people, drawn with
    ``seed``; each leaves at least two people known, and one holds two people at least."""
    if groups < 1:
        raise ValueError(f"--groups must be >= 1, got {groups}")
    order = np.random.default_rng(seed).permutation(count)
    split = [sorted(int(i) for i in part) for part in np.array_split(order, groups)]
    if min(len(g) for g in split) < 1 or count - max(len(g) for g in split) < 2:
        raise ValueError(f"{count} people cannot make {groups} groups of unknown people that "
                         "each leave at least 2 known: use fewer --groups")
    if max(len(g) for g in split) < 2:  # verification's threshold needs pairs of strangers
        raise ValueError(f"{groups} groups of {count} people leave one person per group, and "
                         "the verification threshold needs two strangers in a group: use at "
                         f"most {count // 2} --groups")
    return split


def training_images(labels: Sequence[np.ndarray], groups: Sequence[Sequence[int]]
                    ) -> dict[str, int]:
    """The training images of each run :func:`fit` trains, by name, from every shard's
    ``labels``: the model (every shard), and calibration group ``g`` (every shard but
    ``g % shards``, without the group's people)."""
    counts = {"the model": sum(len(shard) for shard in labels)}
    for g, group in enumerate(groups):
        held_out = g % len(labels)
        counts[f"calibration group {g}"] = sum(
            int(np.isin(shard, group, invert=True).sum())
            for k, shard in enumerate(labels) if k != held_out)
    return counts


def fit_plan(config: Config, groups: int, log: Log) -> CommandPlan:
    """The training :func:`fit` does: every network of ``config`` once for the model and
    once per calibration group (an upper bound when resuming: steps an interrupted fit
    already trained count too)."""
    networks = family_of(config).networks(config)
    runs_count = len(networks) * (1 + groups)
    return CommandPlan("fit", sum(n.train.steps for n in networks) * (1 + groups),
                       runs_count, log)


def _pooled(parts: Sequence[CaseScores], far: float, bound: str = DEFAULT_FAR_BOUND,
            names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per score, over every group: AUROC, the threshold at ``far`` by ``bound``
    (:data:`FAR_BOUNDS`), the false-accept rate of the strangers' pictures it reaches, the
    share of known faces accepted, accepted *and* named right (by the classifier, or for a
    score that uses centroids by the nearest centroid), and ``identities``: every stranger's
    own rate with the interval over strangers (:func:`identity_interval`; a stranger is
    named by ``names[label]``, by its label without ``names``), and the same of the rates
    each stranger had at a threshold set without them (:func:`held_out_rates`; on the
    model's own gallery they are also taken out of what the others meet); ``by_bound``
    holds the same numbers at the threshold of every bound, so a report can compare them."""
    if bound not in FAR_BOUNDS:
        raise ValueError(f"--far-bound must be one of {', '.join(FAR_BOUNDS)}, got {bound!r}")

    def named(labels: np.ndarray) -> np.ndarray:
        return labels if names is None else np.array([names[i] for i in labels])

    identities = named(np.concatenate([p.unknown_labels for p in parts]))
    report = {}
    for name, score in SCORES.items():
        if not all(name in p.known for p in parts):
            continue
        known = np.concatenate([p.known[name] for p in parts])
        unknown = np.concatenate([p.unknown[name] for p in parts])
        right = np.concatenate([p.named_right(score.uses_centroids, score.uses_pictures)
                                for p in parts])
        best = runner_up = None
        if all(p.unknown_best is not None for p in parts):
            best = named(np.concatenate([p.unknown_best[name] for p in parts]))
            runner_up = np.concatenate([p.unknown_runner_up[name] for p in parts])
        thresholds = {key: threshold_by_bound(unknown, identities, far, key)
                      for key in FAR_BOUNDS}
        by_bound = {}
        for key, threshold in thresholds.items():
            accepted = known >= threshold
            held_out = held_out_rates(unknown, identities, far, key, best, runner_up)
            by_bound[key] = {
                "threshold": threshold, "far": float(np.mean(unknown >= threshold)),
                "accepted": float(accepted.mean()),
                "known_accuracy": float((accepted & right).mean()),
                "identities": identity_interval(unknown, identities, threshold,
                                                held_out=held_out)}
        report[name] = {"auroc": auroc(known, unknown), **by_bound[bound], "by_bound": by_bound}
    return report


def choose_score(scores: dict[str, dict[str, Any]], bound: str) -> str:
    """The score :func:`calibrate` chooses from its report's ``scores`` (:func:`_pooled`) at
    ``bound``: the one that accepts and names right the most known faces, AUROC breaking a
    tie; ``cosine`` only when ``nearest`` is missing (a report of an older facefold).

    ``nearest`` and ``cosine`` name a face alike, and named about as many known faces right
    on celeb21 (which of the two won flipped with the groups drawn); but a look-alike the
    calibration had no one like was accepted on several times as many of their photos by
    the centroids as by the nearest pictures (docs/deployment.md, "Strangers it never met"),
    a difference the calibration's own known faces cannot show."""
    candidates = [n for n in scores if not (n == CENTROID_SCORE and "nearest" in scores)]
    return max(candidates, key=lambda n: (scores[n]["by_bound"][bound]["known_accuracy"],
                                          scores[n]["auroc"]))


def _verification(parts: Sequence[CaseScores], far: float) -> dict[str, float]:
    """The verification threshold at ``far`` over pairs of pictures of people the models never
    saw (same person: a true pair; two people: a false one) and the true pairs it accepts."""
    same, other = [], []
    for part in parts:
        features = unit_rows(part.unknown_features)
        similarity = features @ features.T
        upper = np.triu_indices(len(features), k=1)
        is_same = part.unknown_labels[:, None] == part.unknown_labels[None, :]
        same.append(similarity[upper][is_same[upper]])
        other.append(similarity[upper][~is_same[upper]])
    same_all, other_all = np.concatenate(same), np.concatenate(other)
    threshold = threshold_at_far(other_all, far)
    return {"threshold": threshold, "far": float(np.mean(other_all >= threshold)),
            "true_accepts": float(np.mean(same_all >= threshold)),
            "auroc": auroc(same_all, other_all), "same_pairs": len(same_all),
            "other_pairs": len(other_all)}


def networks(config: Config, run_dir: Path) -> list[tuple[Config, Path]]:
    """The networks that make up ``config``'s model in ``run_dir`` and their run folders:
    the run itself, or an ensemble's members in ``RUN/members/<preset>``."""
    return family_of(config).network_runs(config, run_dir)


def train_model(
    data_dir: Path, config: Config, run_dir: Path, inputs: Inputs, eval_shards: Sequence[int],
    log: Log, name: str, people: Sequence[str] | None, data: dict, restart: bool = False,
    hold_out: bool = True, plan: CommandPlan | None = None,
) -> list[tuple[Config, Path]]:
    """Train (or resume, or find finished) the model of ``config`` in ``run_dir``: one run,
    or an ensemble's folder with a run per member inside; returns :func:`networks`. An
    ensemble's ``ensemble.json`` is written once its weights are known
    (:func:`write_ensemble`)."""
    found = networks(config, run_dir)
    if found != [(config, run_dir)]:  # runs of their own inside it: it needs a run.json first
        runs.prepare_run_dir(run_dir, identity_of(data, eval_shards, config, people),
                             list(people or read_labels(data_dir)), runs.run_notes(data_dir, 0),
                             versions(), restart)
    for network, path in found:
        label = name if path == run_dir else f"{name}/{network.preset}"
        Trainer(data_dir, network, path, eval_shards, inputs(network), log, name=label,
                people=people, restart=restart, data=data, hold_out=hold_out, plan=plan).run()
    return found


def by_people(inputs: Inputs, left_out: Sequence[int], count: int
              ) -> Callable[[Config], tuple[list[Split], list[Split]]]:
    """``inputs`` split into the shards of the people kept (relabelled) and of the
    ``left_out`` ones (:func:`~facefold.evaluate.openset_cv.split_people`), once per network."""
    done: dict[str, tuple[list[Split], list[Split]]] = {}

    def split(network: Config) -> tuple[list[Split], list[Split]]:
        if network.preset not in done:
            done[network.preset] = split_people(inputs(network), left_out, count)
        return done[network.preset]

    return split


def network_outputs(found: Sequence[tuple[Config, Path]], pictures: Callable[[Config], Split]
                    ) -> tuple[NetworkOutputs, np.ndarray]:
    """Each network's outputs on its own inputs of the same pictures (``pictures(network)``),
    and the pictures' labels; ``ValueError`` when two networks' inputs hold other labels
    (other pictures)."""
    outputs, labels = [], None
    for network, path in found:
        split = pictures(network)
        if labels is not None and not np.array_equal(labels, split.labels):
            raise ValueError(f"the inputs of {network.preset} hold other pictures than those of "
                             f"{found[0][0].preset}")
        labels = split.labels
        outputs.append(Predictor.load(path, lite=False).outputs_for_model_inputs(split.images))
    return outputs, labels


def model_outputs(outputs: NetworkOutputs, weights: Sequence[float] | None
                  ) -> dict[str, np.ndarray]:
    """The model's outputs from its networks': one network's own, or the ensemble's
    (:func:`facefold.models.outputs.combine_outputs`, as ``predict`` computes them)."""
    return outputs[0] if len(outputs) == 1 else combine_outputs(outputs, weights)


@dataclass(frozen=True)
class _GroupOutputs:
    """One calibration group's network outputs: on the training pictures, on the held-out
    shard's pictures of the known people, and on the group's people (strangers to it)."""

    trained: NetworkOutputs
    trained_labels: np.ndarray
    known: NetworkOutputs
    known_labels: np.ndarray
    unknown: NetworkOutputs
    unknown_labels: np.ndarray
    classes: int


def choose_fit_weights(config: Config, groups: Sequence[_GroupOutputs]
                       ) -> tuple[list[float] | None, dict[str, Any] | None]:
    """A weighted ensemble's member weights (``model.member_weights = "inner"``) and the facts
    of the choice, or ``(None, None)`` for any other model. Chosen by the rule of a
    cross-validated weighted ensemble (:func:`facefold.train.ensemble.fit_weights`) on the
    calibration models' held-out pictures of their known people: pictures none of the
    models weighed was trained on, and never the model's own training pictures."""
    if not family_of(config).weighs_on_inner_split(config):
        return None, None
    width = max(g.classes for g in groups)  # the groups know different numbers of people

    def padded(logits: np.ndarray) -> np.ndarray:  # people a group lacks: probability 0
        out = np.zeros((len(logits), width))
        out[:, :logits.shape[1]] = softmax(logits)
        return out

    labels = np.concatenate([g.known_labels for g in groups])
    members = len(groups[0].known)
    probabilities = np.stack([np.concatenate([padded(g.known[m]["logits"]) for g in groups])
                              for m in range(members)])
    weights, scores = weights_and_facts(labels, probabilities)
    facts = {"source": "the calibration groups' held-out pictures of their known people",
             **scores}
    return [float(w) for w in weights], facts


def write_ensemble(run_dir: Path, found: Sequence[tuple[Config, Path]],
                   weights: Sequence[float] | None) -> None:
    """An ensemble's ``ensemble.json`` in ``run_dir`` (nothing for one network); how the
    weights were chosen is in the model card (``calibration.weights_choice``)."""
    if len(found) == 1 and found[0][1] == run_dir:
        return
    presets = [network.preset for network, _ in found]
    runs.write_ensemble(run_dir, {network.preset: path for network, path in found},
                        dict.fromkeys(presets, False),
                        None if weights is None else dict(zip(presets, weights, strict=True)))


def _calibration_group(data_dir: Path, config: Config, model_dir: Path, inputs: Inputs,
                       labels: list[str], g: int, group: list[int], data: dict, log: Log,
                       plan: CommandPlan | None = None, shards: int | None = None
                       ) -> _GroupOutputs:
    """Train (or find) calibration group ``g``'s model, without the ``group`` people, held out
    shard ``g % shards`` of the ``shards`` that ``inputs`` gives (default: the dataset's);
    its networks' outputs."""
    k = g % (shards or len(data["shards"]))
    known_names = [n for i, n in enumerate(labels) if i not in group]
    log(f"[fit] calibration group {g}: {len(group)} people left out "
        f"({', '.join(labels[i] for i in group)}); evaluated on shard {k}")
    split = by_people(inputs, group, len(labels))

    def trained(network: Config) -> Split:
        return concat([s for j, s in enumerate(split(network)[0]) if j != k])

    def known(network: Config) -> Split:
        return split(network)[0][k]

    def unknown(network: Config) -> Split:
        return concat(split(network)[1])

    found = train_model(data_dir, config, runs.calibration_dir(model_dir, g),
                        lambda network: split(network)[0], [k], log, f"group-{g}",
                        known_names, data, plan=plan)
    return _GroupOutputs(*network_outputs(found, trained), *network_outputs(found, known),
                         *network_outputs(found, unknown), len(known_names))


def _calibration_features(parts: Sequence[CaseScores], known_features: Sequence[np.ndarray],
                          known_labels: Sequence[np.ndarray], names: Sequence[str]
                          ) -> dict[str, np.ndarray]:
    """The arrays of ``calibration_features.npz`` (:mod:`facefold.models.enrollment`): per
    group, the unit features of its strangers (by index into ``names``) and of its known
    people's held-out pictures (by the group's own labels), and its centroids."""
    def by_group(rows: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.full(len(r), g, np.int32) for g, r in enumerate(rows)])

    return {
        "names": np.array(names, dtype=str),
        "unknown_group": by_group([p.unknown_labels for p in parts]),
        "unknown_identity": np.concatenate([p.unknown_labels for p in parts]).astype(np.int32),
        "unknown_features": np.concatenate([unit_rows(p.unknown_features) for p in parts]),
        "known_group": by_group(known_labels),
        "known_labels": np.concatenate(known_labels).astype(np.int32),
        "known_features": np.concatenate([unit_rows(f) for f in known_features]),
        "centroid_group": by_group([p.centroids for p in parts]),
        "centroids": np.concatenate([p.centroids for p in parts]).astype(np.float32),
    }


def _gallery_part(config: Config, model_dir: Path, inputs: Inputs, people: int,
                  weights: Sequence[float] | None, strangers: Strangers | None,
                  stranger_features: np.ndarray | None
                  ) -> tuple[CaseScores, np.ndarray] | None:
    """The ``cosine`` and ``nearest`` scores measured on the model's own gallery
    (:func:`~facefold.evaluate.openset_cv.gallery_scores`) and the shard of each of its
    strangers' pictures (-1: ``--strangers``), or None where they cannot be:
    the features depend on the training, or a person has pictures in one shard only. The
    features are the same from any model of the config, so calibration group 0's give them
    (the model to deploy is trained before it, but its outputs are computed after), and
    ``stranger_features`` (of the ``strangers``' pictures) from any group's model serve."""
    if not family_of(config).features_are_fixed(config):
        return None
    found = networks(config, runs.calibration_dir(model_dir, 0))
    outputs, labels = network_outputs(found, lambda network: concat(inputs(network)))
    sizes = [len(split) for split in inputs(found[0][0])]
    shards = np.repeat(np.arange(len(sizes)), sizes)
    if people_in_one_shard(labels, shards, people):
        return None
    features = model_outputs(outputs, weights)["features"]
    part = gallery_scores(features, labels, shards, people, stranger_features,
                          None if strangers is None else people + strangers.labels)
    return part, np.concatenate([shards, np.full(len(part.unknown_labels) - len(shards), -1)])


def calibrate(data_dir: Path, config: Config, model_dir: Path, inputs: Inputs,
              labels: list[str], groups: int, far: float, data: dict, log: Log,
              plan: CommandPlan | None = None, bound: str = DEFAULT_FAR_BOUND,
              strangers: Strangers | None = None, shards: int | None = None,
              ) -> tuple[dict[str, Any], list[float] | None]:
    """Leave-people-out calibration (see the module docstring); ``inputs`` gives each
    network's shards of the ``labels`` people; ``plan`` counts their training steps off;
    ``strangers`` (``fit --strangers``) are scored by every group's model as more people it
    never saw. The threshold holds ``far`` by ``bound`` (:data:`FAR_BOUNDS`).
    Returns the report and a weighted ensemble's weights (:func:`choose_fit_weights`; the
    report holds them by preset, and the facts of their choice)."""
    outputs = [
        _calibration_group(data_dir, config, model_dir, inputs, labels, g, group, data, log,
                           plan, shards)
        for g, group in enumerate(people_groups(len(labels), groups, config.train.seed))]
    weights, facts = choose_fit_weights(config, outputs)
    parts, known_features = [], []
    stranger_features = None  # the --strangers' features: the same from every fixed model
    for g, group_outputs in enumerate(outputs):
        write_ensemble(runs.calibration_dir(model_dir, g),
                       networks(config, runs.calibration_dir(model_dir, g)), weights)
        unknown = model_outputs(group_outputs.unknown, weights)
        unknown_labels = group_outputs.unknown_labels
        if strangers is not None:  # labels after the dataset's: names[label] names them all
            extra = Predictor.load(runs.calibration_dir(model_dir, g)).outputs(strangers.crops)
            unknown = {k: np.concatenate([unknown[k], extra[k]]) for k in ("logits", "features")}
            unknown_labels = np.concatenate([unknown_labels, len(labels) + strangers.labels])
            stranger_features = extra["features"]
        known = model_outputs(group_outputs.known, weights)
        parts.append(scores_of_outputs(
            model_outputs(group_outputs.trained, weights), group_outputs.trained_labels,
            known, group_outputs.known_labels, unknown, unknown_labels, group_outputs.classes))
        known_features.append(known["features"])
    names = [*labels, *(strangers.names if strangers else [])]
    gallery = _gallery_part(config, model_dir, inputs, len(labels), weights, strangers,
                            stranger_features)
    arrays = _calibration_features(parts, known_features, [g.known_labels for g in outputs],
                                   names)
    scores = _pooled(parts, far, bound, names)
    if gallery is not None:
        part, shards_of = gallery
        scores.update(_pooled([part], far, bound, names))
        arrays.update(gallery_features=unit_rows(part.unknown_features),
                      gallery_labels=part.unknown_labels.astype(np.int32),
                      gallery_shards=shards_of.astype(np.int32))
    runs.write_calibration_features(model_dir, arrays)
    chosen = choose_score(scores, bound)
    report = {
        "groups": groups, "far": far, "far_bound": bound, "scores": scores, "score": chosen,
        "centroid_calibration": "groups" if gallery is None else "gallery",
        "verification": _verification(parts, far),
        "closed_set_accuracy": float(np.mean([p.correct.mean() for p in parts])),
        "known_images": int(sum(len(p.correct) for p in parts)),
        "unknown_images": int(sum(len(p.unknown_labels) for p in parts)),
        "strangers": None if strangers is None else {
            "folder": str(strangers.folder), "people": len(strangers.names),
            "pictures": len(strangers.crops), "skipped": strangers.skipped},
    }
    if weights is not None:
        report["weights"] = dict(zip([n.preset for n, _ in networks(config, model_dir)],
                                     weights, strict=True))
        report["weights_choice"] = facts
    return report, weights


@locks_folders("out")
def fit(
    data_dir: str | Path, config: Config, out: str | Path, groups: int = DEFAULT_GROUPS,
    far: float = DEFAULT_FIT_FAR, log: Log = print, restart: bool = False,
    far_bound: str = DEFAULT_FAR_BOUND, strangers: str | Path | None = None,
    strangers_detect: bool = True, lite: bool = True,
) -> FitResult:
    """Train ``config`` on every shard of ``data_dir`` into ``out``, calibrate its unknown and
    verification thresholds by leave-people-out over ``groups`` groups (plus the people of
    ``strangers``, :mod:`facefold.predict.strangers`; ``strangers_detect=False``: its pictures are
    face crops), holding ``far`` by ``far_bound`` (:data:`FAR_BOUNDS`), and write the model
    card. Resumable like any run; an ``out`` of other data or config is refused unless
    ``restart``. With ``lite``, keep a TFLite export of the model in ``out``
    (:func:`facefold.export.keep_lite`), which the deploy commands run without TensorFlow."""
    if not 0 < far < 1:
        raise ValueError(f"--far must be in (0, 1), got {far}")
    if far_bound not in FAR_BOUNDS:
        raise ValueError(f"--far-bound must be one of {', '.join(FAR_BOUNDS)}, got {far_bound!r}")
    data_dir, out = Path(data_dir), Path(out)
    family_of(config).check_available(config)
    data = runs.data_fingerprint(data_dir)
    labels = read_labels(data_dir)
    check_image_size(config, data_dir)
    check_calibration_groups(len(labels), groups, data_dir)
    check_batch_size(config, training_images(shard_labels(data_dir),
                                             people_groups(len(labels), groups,
                                                           config.train.seed)))
    stranger_files = None if strangers is None else list_strangers(strangers, labels)
    source = SplitSource(data_dir, log)
    started = time.perf_counter()
    plan = fit_plan(config, groups, log)
    found = train_model(data_dir, config, out, source.get, [], log, "fit", None, data,
                        restart, hold_out=False, plan=plan)
    fit_seconds = time.perf_counter() - started
    extra = None if stranger_files is None else crop_strangers(
        stranger_files, Predictor.load(found[0][1]), strangers_detect, log)
    calibration, weights = calibrate(data_dir, config, out, source.get, labels, groups, far,
                                     data, log, plan, far_bound, extra)
    write_ensemble(out, found, weights)
    _write_decision(out, found, source.get, weights, labels, calibration)
    card = _model_card(data_dir, data, config, calibration, fit_seconds,
                       time.perf_counter() - started)
    runs.write_model_card(out, card, format_model_card(card))
    if lite and family_of(config).name != Ensemble.name:  # an ensemble's members: runs
        _keep_lite(out, log)
    log(f"[fit] {out}: {len(labels)} people; {fit_summary(calibration)}")
    return FitResult(out, card)


def _keep_lite(model_dir: Path, log: Log) -> None:
    """``MODEL/lite``, a TFLite export equal in output to the model; when it is not (or
    cannot be written), the model is fit all the same and the deploy commands run it by
    Keras: the reason is logged."""
    started = time.perf_counter()
    try:
        folder = keep_lite(model_dir)
    except (ValueError, RuntimeError) as err:
        log(f"[fit] no TFLite export kept ({err}): verify, identify, predict and serve will "
            "run the model by TensorFlow")
        return
    log(f"[fit] {folder}: TFLite export for verify, identify, predict and serve, run without "
        f"TensorFlow ({time.perf_counter() - started:.0f} s)")


def _write_decision(model_dir: Path, found: Sequence[tuple[Config, Path]], inputs: Inputs,
                    weights: Sequence[float] | None, labels: list[str],
                    calibration: dict[str, Any]) -> None:
    """Every person's centroid (from all their training pictures) and ``threshold.json``."""
    def everything(network: Config) -> Split:
        return concat(inputs(network))

    outputs, picture_labels = network_outputs(found, everything)
    features = model_outputs(outputs, weights)["features"]
    runs.write_centroids(model_dir, class_centroids(features, picture_labels, len(labels)))
    pictures = person_pictures(features, picture_labels, len(labels))
    runs.write_pictures(model_dir, pictures.features, pictures.owners)
    chosen = calibration["scores"][calibration["score"]]
    runs.write_threshold(model_dir, {
        "score": calibration["score"], "threshold": chosen["threshold"],
        "far": calibration["far"],
        "naming": "centroid" if SCORES[calibration["score"]].uses_centroids else "classifier",
        "source": f"facefold fit: leave-people-out over {calibration['groups']} groups",
        "thresholds": {n: r["threshold"] for n, r in calibration["scores"].items()},
        "verify_threshold": calibration["verification"]["threshold"],
        "far_bound": calibration["far_bound"],
        "strangers": _without_rates(chosen["identities"]),
    })


def _without_rates(summary: dict[str, Any]) -> dict[str, Any]:
    """An identity interval without its per-stranger rates (the card lists them), nested
    summaries too."""
    return {k: _without_rates(v) if isinstance(v, dict) and "rates" in v else v
            for k, v in summary.items() if k != "rates"}


@dataclass(frozen=True)
class PeopleFit:
    """A model fit and calibrated without some people (:func:`fit_without_people`): its
    networks, calibration report and weights, the people it knows, and ``split`` (per
    network: the shards of the known people, relabelled, and of the people left out)."""

    found: list[tuple[Config, Path]]
    calibration: dict[str, Any]
    weights: list[float] | None
    known_names: list[str]
    split: Callable[[Config], tuple[list[Split], list[Split]]]


@locks_folders("out")
def fit_without_people(
    data_dir: str | Path, config: Config, out: str | Path, left_out: Sequence[int],
    groups: int = DEFAULT_GROUPS, far: float = DEFAULT_FIT_FAR, log: Log = print,
    far_bound: str = DEFAULT_FAR_BOUND, test_shard: int | None = None,
) -> PeopleFit:
    """:func:`fit` into ``out`` as if the ``left_out`` people (label indices) had never been
    photographed: trained and calibrated on the others only, and without shard
    ``test_shard`` (if given), which is kept to test the known people on. The measurements of
    enrolling and of strangers the model never met start here; ``out`` must be a folder of its
    own per ``left_out`` and ``test_shard``."""
    data_dir, out = Path(data_dir), Path(out)
    labels = read_labels(data_dir)
    data = runs.data_fingerprint(data_dir)
    split = by_people(SplitSource(data_dir, log).get, left_out, len(labels))

    def known(network: Config) -> list[Split]:
        return [s for k, s in enumerate(split(network)[0]) if k != test_shard]

    known_names = [n for i, n in enumerate(labels) if i not in left_out]
    found = train_model(data_dir, config, out, known, [], log, "fit", known_names, data,
                        hold_out=False)
    # Without the test shard, group g holds out shard g % (one shard fewer) of the rest.
    shards = len(data["shards"]) - (test_shard is not None)
    calibration, weights = calibrate(data_dir, config, out, known, known_names, groups, far,
                                     data, log, bound=far_bound, shards=shards)
    write_ensemble(out, found, weights)
    _write_decision(out, found, known, weights, known_names, calibration)
    return PeopleFit(found, calibration, weights, known_names, split)


@locks_folders("out")
def measure_enrollment(
    data_dir: str | Path, config: Config, out: str | Path, newcomers: int = 4,
    strangers: int = 4, shots: int = 5, groups: int = DEFAULT_GROUPS,
    far: float = DEFAULT_FIT_FAR, log: Log = print, far_bound: str = DEFAULT_FAR_BOUND,
) -> dict[str, Any]:
    """How well people enrolled without retraining are named, and whether the false-accept
    rate on strangers holds: ``newcomers`` and ``strangers`` people (drawn with the seed) are
    left out; a model is fit and calibrated on the others into ``out``; each newcomer is
    enrolled from ``shots`` of their pictures and named on the rest, and every stranger's
    picture is tried at the threshold the model then uses (recalibrated for its gallery,
    :meth:`~facefold.predict.Predictor.enrolled_calibration`, whose expected rates are
    ``stated``). Returns the counts and rates (the cosine score decides)."""
    labels = read_labels(data_dir)
    order = np.random.default_rng(config.train.seed + 1).permutation(len(labels))
    new, strange = sorted(order[:newcomers].tolist()), sorted(
        order[newcomers:newcomers + strangers].tolist())
    fitted = fit_without_people(data_dir, config, out, new + strange, groups, far, log,
                                far_bound)
    calibration, weights = fitted.calibration, fitted.weights
    predictor = Predictor.load(out)
    predictor.clear_gallery()  # a rerun enrolls afresh
    outputs, other_labels = network_outputs(fitted.found, lambda n: concat(fitted.split(n)[1]))
    features = model_outputs(outputs, weights)["features"]
    rng = np.random.default_rng(config.train.seed + 2)
    tests = []
    for label in new:
        pictures = rng.permutation(np.flatnonzero(other_labels == label))
        predictor.enroll_features(labels[label], features[pictures[:shots]])
        tests += [(i, labels[label]) for i in pictures[shots:]]
    # The threshold the model uses with them enrolled (recalibrated for the gallery), and
    # the one its calibration set before anyone was enrolled.
    calibrated = calibration["scores"][CENTROID_SCORE]["threshold"]
    threshold = predictor.rejection(score=CENTROID_SCORE)[1]
    stated = predictor.enrolled_calibration()
    similarity = unit_rows(features) @ predictor.all_centroids().T
    best, value = similarity.argmax(axis=1), similarity.max(axis=1)
    people = predictor.people
    named = [people[best[i]] == name and value[i] >= threshold for i, name in tests]
    strangers_in = np.isin(other_labels, strange)
    result = {
        "newcomers": [labels[i] for i in new], "strangers": [labels[i] for i in strange],
        "trained_people": len(fitted.known_names), "shots": shots, "threshold": threshold,
        "calibrated_threshold": calibrated, "far_target": far, "far_bound": far_bound,
        "stated": None if stated is None else {
            "far": stated["far"], "mean": stated["strangers"]["mean"],
            "low": stated["strangers"]["low"], "upper": stated["strangers"]["upper"],
            # What people new to the model meet: the replayed strangers each against a
            # threshold set without them (an older facefold's calibration has none).
            "held_out": {key: stated["strangers"]["held_out"][key]
                         for key in ("mean", "low", "upper", "new_person")}
            if "held_out" in stated["strangers"] else None,
            "newcomers_named_right": stated["newcomers_named_right"],
            "simulated": stated["simulated"]},
        "newcomer_pictures": len(tests),
        "newcomers_named_right": float(np.mean(named)),
        "stranger_pictures": int(strangers_in.sum()),
        "strangers_accepted": float(np.mean(value[strangers_in] >= threshold)),
        "stranger_rates": {labels[i]: float(np.mean(value[other_labels == i] >= threshold))
                           for i in strange},
        "calibration": calibration,
    }
    runs.write_enrollment_test(out, result)
    return result


def _model_card(data_dir: Path, data: dict, config: Config, calibration: dict,
                fit_seconds: float, total_seconds: float) -> dict[str, Any]:
    return {
        "facefold_version": facefold.__version__,
        "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "data": {"folder": str(data_dir.resolve()), "digest": data["digest"],
                 "shards": data["shards"], "people": data["labels"]},
        "preset": config.preset, "family": family_of(config).name, "config": config.to_dict(),
        "calibration": calibration,
        "seconds": {"fit": round(fit_seconds, 1), "total": round(total_seconds, 1)},
        "versions": versions(),
    }
