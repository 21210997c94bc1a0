"""The cosine and nearest scores calibrated on a model's own gallery
(facefold.evaluate.openset_cv.gallery_scores) and the enrollment replay on it
(facefold.models.enrollment.recalibrate with gallery arrays), against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from facefold.evaluate.openset_cv import gallery_scores, people_in_one_shard
from facefold.models.enrollment import recalibrate
from facefold.models.families import family_of
from facefold.models.identities import threshold_by_bound
from facefold.models.presets import resolve_config

# Three people in two shards, on the unit circle (angles in degrees): A near 0, B near 60,
# C at 180 (far from both).
ANGLES = [0, 10, 60, 70, 180, 180]
LABELS = np.array([0, 0, 1, 1, 2, 2])
SHARDS = np.array([0, 1, 0, 1, 0, 1])
FEATURES = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))] for a in ANGLES])


def _cos(a: float, b: float) -> float:
    return float(np.cos(np.radians(a - b)))


def test_gallery_scores_by_hand() -> None:
    part = gallery_scores(FEATURES, LABELS, SHARDS, 3)
    # Centroids of all pictures: A at 5 degrees, B at 65, C at 180. A stranger is scored
    # against everyone else: A's pictures against B (65) and C, B's against A (5), C's
    # against B (its nearer).
    stranger = [_cos(0, 65), _cos(10, 65), _cos(60, 5), _cos(70, 5), _cos(180, 65),
                _cos(180, 65)]
    assert part.unknown["cosine"] == pytest.approx(stranger)
    assert part.unknown_labels.tolist() == LABELS.tolist()
    # Were the best match gone: A's pictures meet C (180), B's meet C, C's meet A (5).
    assert part.unknown_best["cosine"].tolist() == [1, 1, 0, 0, 1, 1]
    assert part.unknown_runner_up["cosine"] == pytest.approx(
        [_cos(0, 180), _cos(10, 180), _cos(60, 180), _cos(70, 180), _cos(180, 5),
         _cos(180, 5)])
    # Known: shard 0's pictures against shard 1's (A at 10, B at 70, C at 180), and the
    # other way round; each is nearest its own person.
    known = [_cos(0, 10), _cos(10, 0), _cos(60, 70), _cos(70, 60), 1.0, 1.0]
    assert part.known["cosine"] == pytest.approx(known)
    assert part.nearest_correct.all() and part.pictures_correct.all()
    # nearest: a person's 2 pictures (fewer than 3: all of them), mean similarity. B's first
    # picture as a stranger: mean of its cosines to A's 0 and 10.
    assert part.unknown["nearest"][2] == pytest.approx((_cos(60, 0) + _cos(60, 10)) / 2)
    # Known, nearest: shard 0's A picture against shard 1's only A picture (10 degrees).
    assert part.known["nearest"][0] == pytest.approx(_cos(0, 10))


def test_scoring_in_blocks_of_rows_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from facefold.evaluate import openset_cv

    whole = gallery_scores(FEATURES, LABELS, SHARDS, 3)
    monkeypatch.setattr(openset_cv, "GALLERY_BLOCK", 1)
    blocks = gallery_scores(FEATURES, LABELS, SHARDS, 3)
    for name in whole.known:
        assert np.array_equal(whole.known[name], blocks.known[name])
        assert np.array_equal(whole.unknown[name], blocks.unknown[name])


def test_more_strangers_are_scored_against_everyone() -> None:
    extra = np.array([[np.cos(np.radians(30)), np.sin(np.radians(30))]])
    part = gallery_scores(FEATURES, LABELS, SHARDS, 3, extra, np.array([3]))
    # 30 degrees: 25 from A's centroid, 35 from B's; A's is the best.
    assert part.unknown["cosine"][-1] == pytest.approx(_cos(30, 5))
    assert part.unknown_best["cosine"][-1] == 0  # A; were A gone, B at 65
    assert part.unknown_runner_up["cosine"][-1] == pytest.approx(_cos(30, 65))
    assert part.unknown_labels.tolist() == [*LABELS.tolist(), 3]


def test_a_person_in_one_shard_only_is_refused_by_name() -> None:
    one_shard = np.array([0, 1, 0, 1, 0, 0])
    assert people_in_one_shard(LABELS, one_shard, 3) == [2]
    assert people_in_one_shard(LABELS, SHARDS, 4) == [3]  # a person with no picture at all
    with pytest.raises(ValueError, match="person 2 has pictures in shard 0 only"):
        gallery_scores(FEATURES, LABELS, one_shard, 3)


def _arrays(features: np.ndarray, labels: np.ndarray, shards: np.ndarray
            ) -> dict[str, np.ndarray]:
    """Gallery arrays as fit stores them (the group arrays are not read for a gallery)."""
    return {"names": np.array(["A", "B", "C", "D"][:len(np.unique(labels))]),
            "gallery_features": features.astype(np.float32),
            "gallery_labels": labels.astype(np.int32), "gallery_shards": shards.astype(np.int32)}


def test_with_nobody_enrolled_the_replay_gives_the_gallery_calibration_back() -> None:
    part = gallery_scores(FEATURES, LABELS, SHARDS, 3)
    alone = recalibrate(_arrays(FEATURES, LABELS, SHARDS), [], far=0.2, bound="pooled")
    names = np.array(["A", "B", "C"])[LABELS]
    threshold = threshold_by_bound(part.unknown["cosine"], names, 0.2, "pooled")
    assert alone["replay"] == "gallery" and alone["threshold"] == pytest.approx(threshold)
    accepted = (part.known["cosine"] >= threshold) & part.nearest_correct
    assert alone["known_accuracy"] == pytest.approx(accepted.mean())


def test_a_stranger_meets_every_trained_person_and_the_newcomer() -> None:
    # A: two pictures at 0 degrees; B: one at 50, one at 70 (centroid 60). One person
    # enrolled from 1 picture. Stranger A meets B's centroid (cos 60 = 0.5) and the newcomer
    # B, enrolled from the picture at 50 (0.643) or at 70 (0.342): A scores the better of
    # the two, never under 0.5. Stranger B meets A and the newcomer A (both at 0): its
    # pictures score cos 50 and cos 70.
    from facefold.models.enrollment import _simulate_gallery, _Tally

    features = np.array([[np.cos(np.radians(a)), np.sin(np.radians(a))]
                         for a in (0, 0, 50, 70)], np.float32)
    arrays = _arrays(features, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    tally = _Tally([], [], [], [], [], [])
    met = _simulate_gallery(arrays, [1], 10, np.random.default_rng(0), tally)
    assert met == 1
    # A trained person and their enrolled copy are one person: the best match is the other
    # person, and with them gone nobody is left (the runner-up: -inf).
    for best, ids, runner_up in zip(tally.stranger_best, tally.stranger_ids,
                                    tally.stranger_runner_up, strict=True):
        assert set(best) == {1 - ids[0]} and set(runner_up) == {-np.inf}
    for scores, ids in zip(tally.stranger_scores, tally.stranger_ids, strict=True):
        expected = ({round(_cos(0, 50), 4), 0.5} if ids[0] == 0
                    else {round(_cos(50, 0), 4), round(_cos(70, 0), 4)})
        assert set(np.round(scores, 4)) <= expected
        if ids[0] == 1:
            assert sorted(np.round(scores, 4)) == sorted(expected)
    # Over the 10 draws, A met the newcomer enrolled from each of B's pictures at least once.
    a_scores = np.concatenate([s for s, i in zip(tally.stranger_scores, tally.stranger_ids,
                                                 strict=True) if i[0] == 0])
    assert set(np.round(a_scores, 4)) == {round(_cos(0, 50), 4), 0.5}


def test_replay_with_one_person_enrolled_by_hand() -> None:
    # A at 0 degrees and B at 60, two identical pictures each (so whichever picture enrolls
    # B or A, the numbers are the same). Stranger A meets B and the newcomer B: 0.5; the same
    # for B. At far 0 the threshold lies just above 0.5. Known faces: A's pictures (A stays
    # trained when B is enrolled) score 1 against A; the newcomer's other picture scores 1
    # against its own centroid: all named right.
    features = np.array([[1, 0], [1, 0], [0.5, np.sqrt(0.75)], [0.5, np.sqrt(0.75)]])
    labels, shards = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    one = recalibrate(_arrays(features, labels, shards), [1], far=0.0, bound="pooled")
    assert one["threshold"] == pytest.approx(0.5) and one["threshold"] > 0.5
    assert one["strangers"]["rates"] == {"A": 0.0, "B": 0.0} and one["simulated"] == [1]
    assert one["known_accuracy"] == 1.0 and one["newcomers_named_right"] == 1.0


def test_only_a_head_on_an_embedding_it_does_not_change_has_fixed_features() -> None:
    fixed = {p: family_of(resolve_config(p)).features_are_fixed(resolve_config(p))
             for p in ("dlib128", "dlib128-ft", "seed", "ensemble")}
    assert fixed == {"dlib128": True, "dlib128-ft": False, "seed": False, "ensemble": False}
