"""The model card and fit's summary in words: what ``facefold fit`` writes to
``MODEL_CARD.md`` and prints, from the card's and the calibration's dicts (built by
:mod:`facefold.fitting`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# How each --far-bound holds --far: in the card's words, and as fit's summary promises it.
BOUND_NAMES = {
    "pooled": "the share of all the strangers' pictures together (`--far-bound pooled`)",
    "upper": "the 95 % upper bound of the mean per-stranger rate (`--far-bound upper`)",
    "worst": "every stranger's own rate (`--far-bound worst`)",
}
BOUND_PROMISES = {
    "pooled": "set so that at most {far:.1%} of their photos together are accepted",
    "upper": "set so that even a cautious estimate of the average stranger's accepted share, "
             "the 95 % upper bound, stays at or below {far:.1%}",
    "worst": "set so that none of them had more than {far:.1%} of their photos accepted",
}


def operating_point(calibration: dict[str, Any]) -> str:
    """The chosen threshold's promise in plain sentences (fit's summary, the card): the
    pictures' rate, the average stranger's and the worst one's, and what people new to the
    model can expect: each stranger measured against a threshold set without them
    (:func:`~facefold.models.identities.held_out_rates`), and one new stranger's range."""
    chosen = calibration["scores"][calibration["score"]]
    people = chosen["identities"]
    how = BOUND_PROMISES[calibration["far_bound"]].format(far=calibration["far"])
    said = (f"This threshold accepted {chosen['far']:.1%} of the photos of "
            f"{people['identities']} people the model never saw as someone ({how}). ")
    held = people.get("held_out")
    # An older facefold's calibration has no held-out rates: its in-sample ones, said so.
    lead = "Strangers differ: the average one had" if held is None else (
        "It was chosen on these very people, and new ones may fare worse: measured each "
        "against a threshold set without them, the average stranger had")
    rates = {**(people if held is None else held), "identities": people["identities"]}
    return (f"{said}{lead} {rates['mean']:.1%} of their photos accepted (95 % interval "
            f"{rates['low']:.1%} to {rates['upper']:.1%}), and the most look-alike, "
            f"{rates['worst']['identity']}, {rates['worst']['rate']:.1%}."
            f"{_new_stranger(rates)}")


def _new_stranger(people: dict[str, Any]) -> str:
    """The sentence on one new stranger
    (:func:`~facefold.models.identities.prediction_interval`), when the interval has it (a
    calibration of an older facefold does not)."""
    new = people.get("new_person")
    if new is None:
        return ""
    return (f" One new stranger of their kind would have between {new['low']:.1%} and "
            f"{new['upper']:.1%} of their photos accepted (95 % of such people), and about "
            f"one in {people['identities'] + 1} would be accepted more often than any of "
            f"these.")


def fit_summary(calibration: dict[str, Any]) -> str:
    """The chosen score, threshold and rates, then :func:`operating_point`."""
    chosen = calibration["scores"][calibration["score"]]
    return (f"{calibration['score']} score, threshold {chosen['threshold']:.4f} "
            f"(--far {calibration['far']} --far-bound {calibration['far_bound']}): "
            f"{chosen['far']:.1%} of strangers' photos accepted, "
            f"{chosen['known_accuracy']:.1%} of known faces accepted and named right. "
            f"{operating_point(calibration)}")


def _members_text(card: dict[str, Any]) -> str:
    """An ensemble's members and their weights, for the model card ("" for one network)."""
    members = card["config"]["model"].get("members") or []  # only an ensemble names members
    if not members:
        return ""
    weights = card["calibration"].get("weights")
    if weights is None:
        return f" An ensemble: the mean probabilities of {', '.join(members)}."
    chosen = ", ".join(f"{p} {w:.2f}" for p, w in weights.items())
    return (f" An ensemble: the weighted mean probabilities of {chosen}, the weights chosen "
            "on the calibration models' held-out pictures of their known people.")


def _strangers_text(cal: dict[str, Any]) -> str:
    """The card's section on the strangers, one by one: how the threshold holds ``far``, the
    two plain sentences, each stranger's rate and the interval's method."""
    chosen = cal["scores"][cal["score"]]
    people = chosen["identities"]
    held = people.get("held_out", {}).get("rates")
    header = "| stranger | photos accepted |" + (
        " against a threshold set without them |" if held else "")
    rows = "\n".join(
        f"| {name} | {rate:.1%} |" + (
            (f" {held[name]:.1%} |" if name in held else " (not left out) |") if held else "")
        for name, rate in sorted(people["rates"].items(), key=lambda item: -item[1]))
    extra = cal.get("strangers")
    added = "" if not extra else (
        f" {extra['people']} of them ({extra['pictures']} pictures) came from "
        f"`{extra['folder']}` (`--strangers`), scored by every group's model.")
    bound = BOUND_NAMES[cal["far_bound"]]
    last = "" if not held else (
        " The last column is each stranger's share at the threshold this bound sets on the "
        "other strangers alone (taken out of the gallery too where the others met them): "
        "what a person new to the model meets" + (
            f" ({len(held)} of the strangers, drawn at random, were left out in turn)."
            if len(held) < len(people["rates"]) else "."))
    return f"""
### Stranger by stranger
The threshold holds {cal['far']:.0%} by {bound}. {operating_point(cal)}

Each of the {people['identities']} strangers counts once here: the mean is over people, not
pictures, and the interval comes from {people['resamples']:,} bootstrap resamples of the
strangers (people drawn again with replacement, seed {people['seed']}).{added}{last}

{header}
|{"---|" * header.count(" |")}
{rows}
"""


def _gallery_text(cal: dict[str, Any], people: Sequence[str]) -> str:
    """The card's note on the cosine and nearest rows when they were measured on the model's
    own gallery (:func:`facefold.fitting._gallery_part`), empty otherwise."""
    if cal.get("centroid_calibration") != "gallery":
        return ""
    return (f" The model's features do not depend on its training, so the cosine and "
            f"nearest rows were measured on its own gallery instead: each of the {len(people)} "
            f"people in turn a stranger to all the others' photos, and each shard's photos "
            f"as known faces against the other shards'.")


def format_model_card(card: dict[str, Any]) -> str:
    """``MODEL_CARD.md``: the card in words."""
    cal = card["calibration"]
    chosen = cal["scores"][cal["score"]]
    verify = cal["verification"]
    rows = "\n".join(
        f"| {name} | {r['auroc']:.3f} | {r['threshold']:.4f} | {r['far']:.3%} | "
        f"{r['accepted']:.1%} | {r['known_accuracy']:.1%} |"
        for name, r in cal["scores"].items())
    people = card["data"]["people"]
    return f"""# Model card: {card['preset']} on {len(people)} people

Made {card['made']} by facefold {card['facefold_version']} (`facefold fit`), on
{card['versions'].get('machine', '?')}; fit {card['seconds']['fit']:.0f} s, with calibration
{card['seconds']['total']:.0f} s.

## Data
`{card['data']['folder']}`, fingerprint `{card['data']['digest'][:16]}…`
({len(card['data']['shards'])} shards). People: {', '.join(people)}.

## Model
Preset `{card['preset']}` ({card['family']} family), trained on every shard: no picture was
held out of this model.{_members_text(card)}

## Unknown people
Calibrated by leave-people-out over {cal['groups']} groups: each group's people were left out of
a model of the same config and scored as strangers ({cal['unknown_images']} pictures), against
{cal['known_images']} held-out pictures of the known people. Threshold at
{cal['far']:.0%} false accepts:

| score | AUROC | threshold | strangers accepted | known accepted | known accepted and named right |
|-------|-------|-----------|--------------------|----------------|--------------------------------|
{rows}

msp, max_logit and energy are the classifier's; cosine is the similarity to a person's mean
photo, nearest the mean similarity to the few of a person's photos most like the face (the
top 2 %, at least 3).{_gallery_text(cal, people)}

Chosen: **{cal['score']}** — expect about {chosen['far']:.1%} of strangers to be accepted as
someone and {chosen['known_accuracy']:.1%} of the known people's faces to be accepted and named
right (the calibration models' closed-set accuracy was {cal['closed_set_accuracy']:.1%}).
{_strangers_text(cal)}
## Verification
Two pictures are the same person when the cosine similarity of their features is at least
{verify['threshold']:.4f}: {verify['far']:.2%} of {verify['other_pairs']} pairs of two strangers
and {verify['true_accepts']:.1%} of {verify['same_pairs']} pairs of one stranger pass (AUROC
{verify['auroc']:.3f}).

## Caveats
The rates hold for pictures like the training ones (same cameras, crops, people of similar
appearance); strangers who look like a known person, or other capture conditions, can do worse.
"""
