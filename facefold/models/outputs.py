"""The numpy side of inference: what a model's ``{"logits", "features"}`` become.

Softmax, an ensemble's combined outputs and the :data:`Infer` type, apart from
:mod:`facefold.models.inference` (which builds the Keras inference models) so that a model
run by a lighter runtime (the LiteRT interpreter, :mod:`facefold.predict.lite`) is named
without importing TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from facefold.models.scores import unit_rows

# uint8 pictures (or embeddings) in, {"logits", "features"} float32 out.
Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for accuracy, returned as float32 (N, C)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def weighted_mean(probabilities: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``sum_m weights[m] * probabilities[m]`` in float64: (M, N, C) and (M,) -> (N, C).
    Rows still sum to 1 when the weights do."""
    return np.tensordot(np.asarray(weights, np.float64), np.asarray(probabilities, np.float64),
                        axes=1)


def combine_outputs(outputs: Sequence[dict[str, np.ndarray]],
                    weights: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """An ensemble's ``{"logits", "features"}`` from its members' outputs on the same images.

    ``logits`` are the log of the mean of the members' softmax probabilities (so softmax
    gives the mean back); ``weights`` (one per member, summing to 1) make it the weighted
    mean, in float64 as a weighted ensemble's run averaged its predictions
    (:mod:`facefold.train.ensemble`); None is the plain mean.

    ``features`` are each member's unit-length features times the square root of its weight
    (1/M each without weights), side by side. They have unit length, and the cosine of two of
    them is the weighted mean of the members' cosines: each member counts by its weight in
    the cosine open-set score and in verification, whatever the scale of its own features
    (raw features side by side would let the member with the longest vectors decide).
    """
    if weights is not None and len(weights) != len(outputs):
        raise ValueError(f"{len(weights)} weights for {len(outputs)} ensemble members")
    probabilities = [softmax(out["logits"]) for out in outputs]
    if weights is None:
        mean = np.mean(probabilities, axis=0)
        scales = np.full(len(outputs), 1.0 / len(outputs))
    else:
        mean = weighted_mean(probabilities, weights)
        scales = np.asarray(weights, np.float64)
    return {
        "logits": np.log(np.maximum(mean, np.finfo(np.float32).tiny)),
        "features": np.concatenate([np.sqrt(scale) * unit_rows(out["features"])
                                    for scale, out in zip(scales, outputs, strict=True)],
                                   axis=1).astype(np.float32),
    }


def ensemble_infer(members: Sequence[Infer], weights: Sequence[float] | None = None) -> Infer:
    """Inference of an ensemble: :func:`combine_outputs` of its members' inference."""
    if weights is not None and len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} ensemble members")
    return lambda images: combine_outputs([member(images) for member in members], weights)


def members_infer(members: Mapping[str, Infer], weights: Sequence[float] | None = None
                  ) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """Inference of an ensemble on each member's own inputs, given by member name (a CNN's
    pictures, a head export's chips): :func:`combine_outputs` of the members' outputs."""
    def infer(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_named_inputs(inputs, list(members), "of each member")
        return combine_outputs([member(inputs[name]) for name, member in members.items()],
                               weights)

    return infer


def check_named_inputs(inputs: Any, names: Sequence[str], whose: str) -> None:
    """``ValueError`` unless ``inputs`` is a dict of exactly ``names`` (an ensemble's inputs:
    ``whose`` says whose they are, in the message)."""
    if not isinstance(inputs, Mapping) or set(inputs) != set(names):
        given = ", ".join(inputs) if isinstance(inputs, Mapping) else "one array"
        raise ValueError(f"an ensemble takes the inputs {whose} by name ({', '.join(names)}), "
                         f"got {given}")
