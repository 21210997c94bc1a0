"""The FLOP count of one training step, from a :class:`~facefold.config.ModelSpec` alone
(:func:`count_training_flops`): what the training bench's GFLOP/s are measured against.

What is counted
---------------
Only the multiply-adds of the convolutions and dense layers, 2 FLOPs each
(bias adds excluded)::

    conv  (per image) = 2 · k · k · C_in · C_out · H · W   at the conv's output size
                                                            (SAME padding, stride 1)
    dense (per image) = 2 · in · out

A training step is taken as 3 × forward (forward, gradient w.r.t. the inputs,
gradient w.r.t. the weights) × batch, the usual convention. Ignored — not
counted anywhere — are pooling, ReLU, per-image standardization, the
antialiased resize of the ``size*`` presets, bias adds, batch norm, the
additions of residual blocks, dropout, the softmax/loss and the Adam update
(about 10 FLOPs per parameter: ~0.04 GFLOP per step for the seed model, under
0.1 % of the total). The count is slightly high as well:
TensorFlow never computes the first convolution's input gradient (the images
need none), which is 2 · forward(conv1) · batch, about 4 % of a seed step.

Hand count for the ``seed`` preset (96×96×3 input, 40 people), per image::

    conv1  2·9·3·32·96·96      =  15,925,248
    conv2  2·9·32·48·48·48     =  63,700,992
    conv3  2·9·48·72·24·24     =  35,831,808
    conv4  2·9·72·108·12·12    =  20,155,392
    fc1    2·(6·6·108)·1024    =   7,962,624   (6·6·108 = 3888 after the 4th pool)
    fc2    2·1024·256          =     524,288
    logits 2·256·40            =      20,480
    forward                    = 144,120,832   ≈ 0.144 GFLOP
    training step, batch 128   = 3 · 128 · 144,120,832 = 55,342,399,488 ≈ 55.3 GFLOP

(with 18 people: 55,338,074,112 — the class count barely matters).

The ``modern`` preset (stem conv, residual stages 2–4 with 1×1 projections,
global average pooling; 18 people), per image::

    conv1a 2·9·3·16·96·96      =   7,962,624
    stage 2 at 48×48 (16 -> 32): conv2a 21,233,664 + conv2b 42,467,328 + shortcut 2,359,296
    stage 3 at 24×24 (32 -> 48): conv3a 15,925,248 + conv3b 23,887,872 + shortcut 1,769,472
    stage 4 at 12×12 (48 -> 96): conv4a 11,943,936 + conv4b 23,887,872 + shortcut 1,327,104
    logits 2·96·18             =       3,456
    forward                    = 152,767,872; training step, batch 128 ≈ 58.7 GFLOP

Flip TTA doubles the forward pass of evaluation and prediction, not of training.
"""

from __future__ import annotations

import math
from typing import Any

from facefold.config import ModelSpec
from facefold.models.cnn import CONV_NAME, DENSE_NAME

TRAIN_PASSES = 3  # forward + input gradient + weight gradient


def count_training_flops(spec: ModelSpec, num_classes: int, batch: int) -> dict[str, Any]:
    """FLOPs of one training step of the CNN built from ``spec``, counted analytically.

    Takes the architecture, the number of classes and the batch size. Returns
    ``{"per_layer_forward": {"conv1": …, "fc1": …, "logits": …}`` (forward FLOPs
    per image), ``"forward_per_image"`` (their sum), ``"train_step"``
    (``3 × forward_per_image × batch``), ``"batch"`` and ``"num_classes"``}.
    Only conv and dense multiply-adds count; see the module docstring for what
    is left out and the hand count of the seed model (≈ 55.3 GFLOP at batch 128).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    layers: dict[str, int] = {}
    side, width_in = spec.input_size, spec.channels
    for i, width in enumerate(spec.conv_channels, start=1):
        layers.update(_stage_flops(spec, i, width_in, width, side))
        side, width_in = math.ceil(side / 2), width  # max-pool stride 2, SAME padding
    # The flattened last pool, or one value per channel after global average pooling.
    units_in = width_in if spec.global_pool else side * side * width_in
    for i, units in enumerate(spec.dense_units, start=1):
        layers[DENSE_NAME.format(i)] = 2 * units_in * units
        units_in = units
    layers["logits"] = 2 * units_in * num_classes
    forward = sum(layers.values())
    return {
        "per_layer_forward": layers,
        "forward_per_image": forward,
        "train_step": TRAIN_PASSES * forward * batch,
        "batch": batch,
        "num_classes": num_classes,
    }


def _stage_flops(spec: ModelSpec, i: int, width_in: int, width: int, side: int) -> dict[str, int]:
    """Forward FLOPs per image of the convs of stage ``i`` (``width_in`` -> ``width`` channels
    at ``side`` x ``side``), keyed by layer name as :func:`facefold.models.cnn.build_model`
    names them: ``conv{i}``, or ``conv{i}a`` (+ ``conv{i}b``, ``conv{i}_shortcut``)."""

    def conv(kernel: int, channels_in: int) -> int:
        # SAME, stride 1: the conv's output has the input's side.
        return 2 * kernel**2 * channels_in * width * side * side

    name, residual = CONV_NAME.format(i), spec.residual and i > 1  # stage 1 is never residual
    if not spec.batch_norm and not residual:
        return {name: conv(spec.kernel_size, width_in)}
    layers = {f"{name}a": conv(spec.kernel_size, width_in)}
    if residual:
        layers[f"{name}b"] = conv(spec.kernel_size, width)
        if width_in != width:  # a projection only where the width changes
            layers[f"{name}_shortcut"] = conv(1, width_in)
    return layers
