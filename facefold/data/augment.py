"""Training-time augmentation of a batch, in two phases: draw the jitter, then apply it.

:func:`draw` makes every random choice of a batch from stateless RNGs keyed
by a seed (a few numbers per image: crop window or box, flip, colour matrix,
brightness, erasing rectangle). :func:`apply` turns uint8 images into float32
crops with those numbers: pure arithmetic on pixels, which XLA compiles into a
few fused loops (:func:`augment` does both), instead of one TensorFlow op per
step, so augmentation stops competing with training for the cores (its time
per batch: docs/performance.md, "2-vCPU AMD EPYC Zen 4 with AVX-512 BF16").
The draws stay outside XLA because XLA's stateless generators give other
numbers than TensorFlow's: drawn outside, a batch is the same with or without
compilation, and the same as before this split.

See :class:`facefold.config.AugmentSpec` for what is jittered and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from facefold.config import AugmentSpec

Draws = dict[str, tf.Tensor]

# RGB <-> YIQ (NTSC): Y is luma, I and Q span the colour plane. A hue shift is a
# rotation of (I, Q); a saturation change scales them. Both keep gray pixels gray.
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

# Random erasing draws a rectangle of this fraction of the crop's area and this aspect range
# (Zhong et al. 2017 use up to 0.4 and 0.3-3.3; a quarter still leaves most of a face).
ERASE_AREA = (0.02, 0.25)
ERASE_ASPECT = (1 / 3, 3.0)


def color_matrix(hue_shift: tf.Tensor, saturation: tf.Tensor) -> tf.Tensor:
    """3x3 RGB matrices, one per image, that rotate hue and scale saturation.

    ``hue_shift`` (B,) is a fraction of the hue circle (0.5 = half a turn),
    ``saturation`` (B,) a factor (0 = gray, 1 = unchanged). Returns (B, 3, 3)
    float32 ``M`` with ``rgb_out = M @ rgb_in``. It is the linear (YIQ) form of
    ``tf.image.adjust_hue`` + ``adjust_saturation``: it moves colours the same
    way and as far as the HSV versions (not to the same values: it keeps luma
    where HSV keeps the max channel), for one matrix product instead of two
    colour-space round trips.
    """
    # Minus: in YIQ the HSV hue order (red -> yellow -> green) runs clockwise.
    angle = -2.0 * np.pi * tf.cast(hue_shift, tf.float32)
    cos, sin = tf.cos(angle) * saturation, tf.sin(angle) * saturation
    ones, zeros = tf.ones_like(cos), tf.zeros_like(cos)
    yiq_op = tf.stack(
        [tf.stack([ones, zeros, zeros], -1),
         tf.stack([zeros, cos, -sin], -1),
         tf.stack([zeros, sin, cos], -1)], axis=1
    )  # (B, 3, 3)
    to_rgb = tf.constant(_YIQ_TO_RGB, tf.float32)
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    return tf.einsum("ij,bjk,kl->bil", to_rgb, yiq_op, to_yiq)


def _batch_size(x: tf.Tensor) -> int | tf.Tensor:
    """The batch size of ``x``: static when known, which keeps shapes known to grappler's
    cost model (no PredictCost warnings) and to XLA, else the dynamic size."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _uniform(batch: int | tf.Tensor, seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """``batch`` stateless uniform draws in [low, high), float32."""
    return tf.random.stateless_uniform((batch,), seed, low, high)


def _log_uniform(batch: int | tf.Tensor, seed: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """``batch`` draws whose logarithm is uniform: ratios as likely below 1 as above."""
    return tf.exp(_uniform(batch, seed, np.log(low), np.log(high)))


def exact_window(spec: AugmentSpec) -> bool:
    """Whether the crop is an exact integer window (no scale, aspect or rotation jitter)."""
    return spec.scale == (1.0, 1.0) and spec.aspect == (1.0, 1.0) and not spec.rotation


def _jitters_colour(spec: AugmentSpec, channels: int) -> bool:
    return channels == 3 and bool(spec.hue or spec.saturation != (1.0, 1.0))


# --------------------------------------------------------------------------- draws


@dataclass(frozen=True)
class Boxes:
    """Where each output crop samples its input (all (B,) float32, input pixel units).

    Output pixel (column u, row v) of a ``crop`` x ``crop`` crop samples the
    input at ``centre + R(angle) @ ((u - m) * step_x, (v - m) * step_y)`` with
    ``m = (crop - 1) / 2``, pixel centres at integers; a negative ``step_x``
    mirrors the crop.
    """

    centre_x: tf.Tensor
    centre_y: tf.Tensor
    step_x: tf.Tensor
    step_y: tf.Tensor
    angle: tf.Tensor  # radians


def random_boxes(
    shape: tuple[int | tf.Tensor, int, int], spec: AugmentSpec, crop: int, flip: tf.Tensor,
    seed: tf.Tensor,
) -> Boxes:
    """Random boxes for a batch of input ``shape`` (batch, height, width).

    A box covers ``spec.scale`` x crop² pixels (within a pixel), its
    width/height ratio is in ``spec.aspect`` (log-uniform), it is cut to the
    image and placed uniformly where its samples stay inside the image, and
    turned about its centre by up to ±``spec.rotation`` degrees (the corners of
    a turned box may leave the image). ``flip`` (B,) mirrors the crop.
    """
    batch, height, width = shape
    seeds = tf.random.experimental.stateless_split(seed, 5)
    area = _uniform(batch, seeds[0], *spec.scale) * crop * crop
    ratio = _log_uniform(batch, seeds[1], *spec.aspect)
    # Samples span (crop - 1) steps; the span must fit between the first and last pixel centre.
    span_x = tf.minimum(tf.sqrt(area * ratio) * (crop - 1) / crop, width - 1)
    span_y = tf.minimum(tf.sqrt(area / ratio) * (crop - 1) / crop, height - 1)
    centre_x = _uniform(batch, seeds[2], 0, 1) * (width - 1 - span_x) + span_x / 2
    centre_y = _uniform(batch, seeds[3], 0, 1) * (height - 1 - span_y) + span_y / 2
    limit = np.deg2rad(spec.rotation)
    angle = _uniform(batch, seeds[4], -limit, limit) if spec.rotation else tf.zeros_like(area)
    step_x = span_x / (crop - 1) * tf.where(flip, -1.0, 1.0)
    return Boxes(centre_x, centre_y, step_x, span_y / (crop - 1), angle)


def draw_erasing(batch: int | tf.Tensor, size: int, channels: int, probability: float,
                 seed: tf.Tensor) -> Draws:
    """Random-erasing rectangles for ``size`` x ``size`` crops (see :func:`random_erase`).

    Returns ``erase_top``/``erase_left``/``erase_height``/``erase_width`` (B,)
    in pixels, ``erase_on`` (B,) 1.0 where the image is erased (with
    ``probability``) and ``erase_colour`` (B, 1, 1, channels) in [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    area = _uniform(batch, seeds[0], *ERASE_AREA) * size * size
    ratio = _log_uniform(batch, seeds[1], *ERASE_ASPECT)
    height = tf.minimum(tf.sqrt(area / ratio), size)
    width = tf.minimum(tf.sqrt(area * ratio), size)
    return {
        "erase_top": _uniform(batch, seeds[2], 0, 1) * (size - height),
        "erase_left": _uniform(batch, seeds[3], 0, 1) * (size - width),
        "erase_height": height,
        "erase_width": width,
        "erase_on": tf.cast(_uniform(batch, seeds[4], 0, 1) < probability, tf.float32),
        "erase_colour": tf.random.stateless_uniform((batch, 1, 1, channels), seeds[5]),
    }


def draw(shape: tuple[int | tf.Tensor, int, int, int], spec: AugmentSpec, crop: int,
         seed: tf.Tensor) -> Draws:
    """Every random choice of a batch of input ``shape`` (B, H, W, C), keyed by ``seed`` (2,).

    Returns a dict of per-image tensors: ``flip`` (B,) bool; the window offsets
    ``top``/``left`` (B,) int32 for an exact crop, else the box fields of
    :class:`Boxes`; ``contrast``/``brightness`` (B,) and ``matrix`` (B, C, C),
    the hue/saturation colour matrix (identity when off); and the
    :func:`draw_erasing` fields when ``spec.erasing`` is set. Draws of the
    options that are off by default come from seeds folded off ``seed``, so the
    default settings draw exactly what they drew before those options existed.
    """
    batch, height, width, channels = shape
    seeds = tf.random.experimental.stateless_split(seed, 7)
    flip = _uniform(batch, seeds[2], 0.0, 1.0) < 0.5 if spec.flip else tf.zeros((batch,), tf.bool)
    draws: Draws = {"flip": flip}
    if exact_window(spec):
        draws["top"] = tf.random.stateless_uniform((batch,), seeds[0], 0, height - crop + 1,
                                                   tf.int32)
        draws["left"] = tf.random.stateless_uniform((batch,), seeds[1], 0, width - crop + 1,
                                                    tf.int32)
    else:
        boxes = random_boxes((batch, height, width), spec, crop, flip,
                             tf.random.experimental.stateless_fold_in(seed, 1))
        draws.update(vars(boxes))
    draws["brightness"] = _uniform(batch, seeds[3], -spec.brightness, spec.brightness) if (
        spec.brightness) else tf.zeros((batch,))
    draws["contrast"] = _uniform(batch, seeds[4], *spec.contrast) if (
        spec.contrast != (1.0, 1.0)) else tf.ones((batch,))
    if _jitters_colour(spec, channels):
        draws["matrix"] = color_matrix(_uniform(batch, seeds[5], -spec.hue, spec.hue),
                                       _uniform(batch, seeds[6], *spec.saturation))
    if spec.erasing:
        draws.update(draw_erasing(batch, crop, channels, spec.erasing,
                                  tf.random.experimental.stateless_fold_in(seed, 2)))
    return draws


# --------------------------------------------------------------------------- apply


def _window(images: tf.Tensor, crop: int, top: tf.Tensor, left: tf.Tensor, flip: tf.Tensor
            ) -> tf.Tensor:
    """Per-image ``crop`` x ``crop`` windows at integer offsets ``top``, ``left`` (B,) of uint8
    images, mirrored left-right where ``flip`` (B,) is true. Two gathers; the mirror is a
    reversed column index, so it costs nothing extra."""
    steps = tf.range(crop, dtype=tf.int32)
    columns = tf.where(flip[:, None], crop - 1 - steps, steps)
    rows = tf.gather(images, top[:, None] + steps, axis=1, batch_dims=1)
    return tf.gather(rows, left[:, None] + columns, axis=2, batch_dims=1)


def projective_transforms(boxes: Boxes, crop: int) -> tf.Tensor:
    """``boxes`` as (B, 8) rows ``a0 a1 a2 b0 b1 b2 0 0`` of ``ImageProjectiveTransformV3``:
    output pixel (u, v) samples the input at ``(a0 u + a1 v + a2, b0 u + b1 v + b2)``."""
    cos, sin = tf.cos(boxes.angle), tf.sin(boxes.angle)
    a0, a1 = cos * boxes.step_x, -sin * boxes.step_y
    b0, b1 = sin * boxes.step_x, cos * boxes.step_y
    middle = (crop - 1) / 2  # the output's centre samples the box's centre
    a2 = boxes.centre_x - middle * (a0 + a1)
    b2 = boxes.centre_y - middle * (b0 + b1)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _linear_taps(start: tf.Tensor, step: tf.Tensor, count: int, size: int
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Sample positions ``start + i * step`` (B,) x ``count`` along an axis of ``size`` pixels
    as (lower index, upper index, weight of the upper), each (B, count)."""
    position = start[:, None] + step[:, None] * tf.range(count, dtype=tf.float32)
    position = tf.clip_by_value(position, 0.0, size - 1.0)
    lower = tf.floor(position)
    upper = tf.minimum(lower + 1.0, size - 1.0)
    return tf.cast(lower, tf.int32), tf.cast(upper, tf.int32), position - lower


def _resample(images: tf.Tensor, boxes: Boxes, crop: int, turned: bool) -> tf.Tensor:
    """uint8 images (B, H, W, C) sampled bilinearly at ``boxes`` into float32 crops
    (B, crop, crop, C) in [0, 1]; ``turned``: whether the boxes may be rotated.

    Unturned boxes are separable: gather two rows per output row and blend, then
    two columns per output column (mirrored boxes just step leftwards). That
    compiles under XLA; turned boxes need the general projective transform,
    which does not, and fills a corner outside the image by reflection.
    """
    if turned:
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32),  # uint8 output would truncate, not round
            transforms=projective_transforms(boxes, crop),
            output_shape=tf.constant([crop, crop]), fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )
        return x / 255.0
    height, width = images.shape[1], images.shape[2]
    half = (crop - 1) / 2
    y0, y1, wy = _linear_taps(boxes.centre_y - half * boxes.step_y, boxes.step_y, crop, height)
    x0, x1, wx = _linear_taps(boxes.centre_x - half * boxes.step_x, boxes.step_x, crop, width)

    def gather(source: tf.Tensor, index: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.cast(tf.gather(source, index, axis=axis, batch_dims=1), tf.float32)

    top, bottom = gather(images, y0, 1), gather(images, y1, 1)  # (B, crop, W, C)
    rows = top + wy[:, :, None, None] * (bottom - top)
    left, right = gather(rows, x0, 2), gather(rows, x1, 2)  # (B, crop, crop, C)
    return (left + wx[:, None, :, None] * (right - left)) / 255.0


def _colour(x: tf.Tensor, draws: Draws) -> tf.Tensor:
    """Brightness, contrast and colour matrix of float crops (B, S, S, C), clipped to [0, 1].

    The whole colour jitter is affine per image: contrast ``c`` pulls each
    channel towards its mean ``m``, brightness adds ``b``, the colour matrix
    ``M`` (``M 1 = 1``, gray stays gray) mixes channels, so
    ``M (c x + (1 - c) m + b) = c M x + (1 - c) M m + b``. ``M x`` is written as
    a sum over input channels because XLA fuses that into the pixel loop; as a
    matmul with an inner size of 3 it costs twice the rest of the jitter.
    """
    contrast, brightness = draws["contrast"], draws["brightness"]
    mean = tf.reduce_mean(tf.reduce_mean(x, axis=2), axis=1)  # (B, C)
    if "matrix" in draws:
        matrix = draws["matrix"]  # (B, C, C)
        mean = tf.einsum("bij,bj->bi", matrix, mean)
        scaled = contrast[:, None, None] * matrix
        x = sum(x[..., j : j + 1] * scaled[:, None, None, :, j] for j in range(x.shape[3]))
    else:
        x = x * contrast[:, None, None, None]
    shift = (1.0 - contrast)[:, None] * mean + brightness[:, None]  # (B, C)
    return tf.clip_by_value(x + shift[:, None, None, :], 0.0, 1.0)


def erase(x: tf.Tensor, draws: Draws) -> tf.Tensor:
    """Paint the :func:`draw_erasing` rectangle of each erased crop (B, S, S, C) its colour."""
    position = tf.range(x.shape[1], dtype=tf.float32)[None, :]  # (1, S)

    def inside(start: tf.Tensor, length: tf.Tensor) -> tf.Tensor:  # (B, S) 0/1
        return tf.cast((position >= start[:, None]) & (position < (start + length)[:, None]),
                       tf.float32)

    # A 0/1 mask as an outer product and a blend: XLA fuses it better than tf.where.
    rows = inside(draws["erase_top"], draws["erase_height"]) * draws["erase_on"][:, None]
    mask = rows[:, :, None, None] * inside(draws["erase_left"], draws["erase_width"])[
        :, None, :, None]  # (B, S, S, 1)
    return x + mask * (draws["erase_colour"] - x)


def apply(images: tf.Tensor, draws: Draws, spec: AugmentSpec, crop: int) -> tf.Tensor:
    """uint8 images (B, H, W, C) -> float32 crops (B, crop, crop, C) in [0, 1], jittered by
    ``draws`` (from :func:`draw` with the same ``spec`` and ``crop``)."""
    if "top" in draws:
        window = _window(images, crop, draws["top"], draws["left"], draws["flip"])
        x = tf.cast(window, tf.float32) / 255.0
    else:
        boxes = Boxes(*(draws[f.name] for f in Boxes.__dataclass_fields__.values()))
        x = _resample(images, boxes, crop, turned=bool(spec.rotation))
    if spec.brightness or spec.contrast != (1.0, 1.0) or "matrix" in draws:
        x = _colour(x, draws)
    if spec.erasing:
        x = erase(x, draws)
    return x


# One compiled function per (input shape, spec, crop), traced on first use and reused.
_apply_compiled = tf.function(apply, jit_compile=True)


def augment(images: tf.Tensor, spec: AugmentSpec, crop: int, seed: tf.Tensor) -> tf.Tensor:
    """Jitter a batch of uint8 images (B, H, W, C) into float32 crops (B, crop, crop, C) in [0, 1].

    A random crop with left-right flip (an exact integer window, or a random
    box resampled bilinearly when ``spec`` asks for scale, aspect or rotation
    jitter), then brightness, contrast and, for RGB, hue and saturation, then
    random erasing; each drawn per image by :func:`draw` from ``seed`` (2,).
    Applied with XLA unless the boxes turn (the projective transform has no XLA
    kernel).
    """
    shape = (_batch_size(images), *images.shape[1:])
    apply_fn = apply if spec.rotation else _apply_compiled
    return apply_fn(images, draw(shape, spec, crop, seed), spec, crop)


def random_erase(x: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """With ``probability`` per image, paint a random rectangle of float crops (B, S, S, C) in
    one random colour (uniform in [0, 1] per channel); the rectangle's area and aspect are
    drawn from :data:`ERASE_AREA` and :data:`ERASE_ASPECT`, its position uniformly inside
    the crop. One colour, not per-pixel noise: the noise cost as much as the whole jitter."""
    return erase(x, draw_erasing(_batch_size(x), x.shape[1], x.shape[3], probability, seed))


def mixes(spec: AugmentSpec) -> bool:
    """True when ``spec`` mixes crops and labels (mixup or cutmix)."""
    return bool(spec.mixup or spec.cutmix)


def _beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One stateless Beta(alpha, alpha) draw, as the ratio of two Gamma(alpha) draws."""
    g = tf.random.stateless_gamma((2,), seed, alpha=alpha)
    return g[0] / (g[0] + g[1])


def mix(x: tf.Tensor, labels: tf.Tensor, num_classes: int, spec: AugmentSpec,
        seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup or cutmix a batch: crops (B, S, S, C) float32 and int labels (B,) or soft targets
    (B, num_classes) -> mixed crops and soft targets (B, num_classes) float32 whose rows sum
    to 1 (when the given targets' rows do).

    Crop ``i`` is mixed with crop ``B - 1 - i`` (the batch reversed: the batch is already a
    random draw, so this pairs crops at random), in one proportion ``lam`` for the batch drawn
    from ``seed`` (2,). Mixup: ``lam * x_i + (1 - lam) * x_j``. Cutmix: a rectangle of
    ``1 - lam`` of the area (clipped at the border) comes from ``x_j``, and the target uses
    the area actually pasted. Either way the target is ``w * t_i + (1 - w) * t_j`` (``t`` =
    ``onehot(y)`` or the given soft target), ``w`` the share of crop ``i`` in the result.
    See :class:`AugmentSpec`.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    size = x.shape[1]
    if spec.cutmix:
        lam_cut = _beta(spec.cutmix, seeds[0])
        side = tf.sqrt(1.0 - lam_cut) * size  # a square of 1 - lam of the area, before clipping
        centre = tf.random.stateless_uniform((2,), seeds[1], 0.0, float(size))
        low, high = tf.clip_by_value(centre - side / 2, 0, size), tf.clip_by_value(
            centre + side / 2, 0, size)
        pixel = tf.range(size, dtype=tf.float32) + 0.5  # pixel centres
        inside = [tf.cast((pixel >= low[k]) & (pixel < high[k]), tf.float32) for k in (0, 1)]
        keep_cut = 1.0 - inside[0][:, None] * inside[1][None, :]  # (S, S): 1 = crop i's pixel
        share_cut = tf.reduce_mean(keep_cut)
    if spec.mixup:
        lam_mix = _beta(spec.mixup, seeds[2])
    if spec.cutmix and spec.mixup:
        use_cut = tf.random.stateless_uniform((), seeds[3]) < 0.5
        keep = tf.where(use_cut, keep_cut, tf.fill((size, size), lam_mix))
        share = tf.where(use_cut, share_cut, lam_mix)
    elif spec.cutmix:
        keep, share = keep_cut, share_cut
    else:
        keep, share = tf.fill((size, size), lam_mix), lam_mix
    keep = keep[None, :, :, None]  # (1, S, S, 1)
    x = keep * x + (1.0 - keep) * tf.reverse(x, [0])
    target = (tf.one_hot(labels, num_classes, dtype=tf.float32) if labels.shape.rank == 1
              else tf.cast(labels, tf.float32))
    return x, share * target + (1.0 - share) * tf.reverse(target, [0])
