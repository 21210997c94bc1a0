"""``facefold analyze activations``: what every conv channel of a trained run does to one image.

For a run folder and a picture it writes one PNG per conv layer
(``OUT/<image stem>-conv1.png`` …; ``OUT`` defaults to ``RUN/analysis/activations``):
every channel's output as a gray tile (one scale per layer, black = 0), and the
channels whose output is zero everywhere on this image crossed out in red.
It also counts, per layer, the channels that are *dead on the eval shard*:
zero for every image of the run's held-out shard(s).

The picture is prepared like a dataset image: decoded with
:func:`facefold.data.images.load_rgb`, resized and centre-cropped by
:func:`~facefold.data.images.square_crop` to the dataset's image size, then the
central ``crop_size`` window is taken (:func:`facefold.data.pipeline.center_crop`)
as at evaluation; gray for a 1-channel model. The dataset's image size is read
from the decoded eval shards. When the dataset named in ``RUN/run.json`` is no
longer there, the size is taken as ``crop_size + 16`` (112 for the 96 crop,
as ``facefold dataset build`` makes by default) and the eval-shard count is skipped.

Bad input fails before anything is written: a folder that is not a run or has
no checkpoint raises ``FileNotFoundError``, an unreadable picture
:class:`~facefold.data.images.ImageError`; both name the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from facefold import runs
from facefold.atomic import atomic_path
from facefold.config import Config
from facefold.data.images import load_rgb, square_crop
from facefold.data.pipeline import Split, center_crop, concat, decode_shards, evaluation_batches
from facefold.data.records import list_shards
from facefold.log import Log
from facefold.models.cnn import (  # also registers its custom layers
    CONV_NAME,
    build_probe,
    relu_layer_names,
)
from facefold.models.families import family_of

OUT_DIR = Path("analysis") / "activations"
# Size margin of a dataset image over the model's crop when the dataset is gone (112 = 96 + 16).
TILE_MIN = 48  # pixels: small feature maps are enlarged (nearest) to at least this side
DEAD_COLOR = (220, 30, 30)


@dataclass(frozen=True)
class RunModel:
    """A run's newest checkpoint, loaded for inference, with its config and ``run.json``."""

    model: keras.Model
    step: int
    config: Config
    info: dict


@dataclass(frozen=True)
class ActivationReport:
    """What :func:`analyze_activations` found.

    ``channels``: conv layer -> number of channels. ``dead_in_image``: conv
    layer -> channels all zero on the image. ``dead_in_eval``: conv layer ->
    channels zero on every eval image, or None when the dataset was not found.
    """

    step: int
    pngs: list[Path]
    channels: dict[str, int]
    dead_in_image: dict[str, list[int]]
    dead_in_eval: dict[str, list[int]] | None
    eval_images: int


def load_run_model(run_dir: str | Path) -> RunModel:
    """Load the newest checkpoint of ``run_dir``; ``FileNotFoundError`` naming what is missing."""
    run_dir = Path(run_dir)
    if not runs.is_run(run_dir):
        raise FileNotFoundError(f"{run_dir / runs.RUN_FILE} is missing: {run_dir} is not a "
                                "facefold run folder")
    info = runs.read_run_info(run_dir)
    config = runs.read_run_config(run_dir)
    family_of(config).require_conv_layers(config, "analyze activations")
    found = runs.latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(
            f"{run_dir / runs.CHECKPOINT_DIR} holds no checkpoint: train the run first"
        )
    step, path = found
    model = keras.models.load_model(path, compile=False)  # inference only: no optimizer needed
    return RunModel(model, step, config, info)


def conv_layer_names(model: keras.Model) -> list[str]:
    """The conv layers of a facefold CNN (``conv1 … convN``), in order."""
    prefix = CONV_NAME.format("")
    return [name for name in relu_layer_names(model) if name.startswith(prefix)]


def eval_split(info: dict, channels: int) -> Split | None:
    """The run's held-out images, or None when its dataset folder holds no shards any more."""
    data_dir = Path(info["data_dir"])
    if not data_dir.is_dir() or not list_shards(data_dir):
        return None
    splits = decode_shards(data_dir, channels)
    return concat([splits[k] for k in info["eval_shards"]])


def prepare_image(img: Image.Image, size: int, crop: int, channels: int) -> np.ndarray:
    """A decoded picture as the model input (1, crop, crop, channels) float32 in [0, 1].

    Same path as a dataset image at evaluation: square crop to ``size``, then
    the central ``crop`` window; gray (ITU-R 601 luma, as the JPEG decoder) for 1 channel.
    """
    square = square_crop(img, size)
    array = np.asarray(square.convert("L"))[..., None] if channels == 1 else np.asarray(square)
    return center_crop(array[None], crop).numpy()


def conv_outputs(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """The conv layer outputs for one image ``x`` (1, crop, crop, C): ``{layer: (H, W, ch)}``."""
    names = conv_layer_names(model)
    outputs = tf.nest.flatten(build_probe(model, names)(x, training=False))
    return {n: tf.cast(a[0], tf.float32).numpy() for n, a in zip(names, outputs, strict=True)}


def dead_channels(model: keras.Model, split: Split, crop: int, batch_size: int) -> dict[str, list]:
    """Per conv layer, the channels whose output is zero for every image of ``split``."""
    names = conv_layer_names(model)
    probe = build_probe(model, names)

    @tf.function
    def any_nonzero(x: tf.Tensor) -> list[tf.Tensor]:
        outputs = tf.nest.flatten(probe(x, training=False))
        return [tf.reduce_any(tf.not_equal(a, 0), axis=[0, 1, 2]) for a in outputs]  # (ch,)

    alive = {name: None for name in names}
    for x, _ in evaluation_batches(split, crop, batch_size):
        for name, flags in zip(names, any_nonzero(x), strict=True):
            flags = flags.numpy()
            alive[name] = flags if alive[name] is None else alive[name] | flags
    return {name: np.flatnonzero(~flags).tolist() for name, flags in alive.items()}


def activation_grid(acts: np.ndarray, dead: list[int], title: str) -> Image.Image:
    """Tile the channels of ``acts`` (H, W, ch) in a square-ish grid; cross out ``dead`` ones.

    One gray scale per layer (black = 0, white = the layer's largest output), so
    tiles compare across channels.
    """
    height, width, channels = acts.shape
    scale = max(1, math.ceil(TILE_MIN / max(height, width)))
    tile_h, tile_w, pad, header = height * scale, width * scale, 3, 18
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    font = ImageFont.load_default(size=13)  # the bare bitmap default drops spaces
    width = max(cols * (tile_w + pad) + pad, math.ceil(font.getlength(title)) + 2 * pad)
    canvas = Image.new("RGB", (width, header + rows * (tile_h + pad) + pad), (70, 70, 70))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), title, fill=(255, 255, 255), font=font)
    top_value = float(acts.max()) or 1.0
    gray = np.clip(acts / top_value * 255.0, 0, 255).round().astype(np.uint8)
    for c in range(channels):
        row, col = divmod(c, cols)
        left, top = pad + col * (tile_w + pad), header + pad + row * (tile_h + pad)
        tile = Image.fromarray(gray[..., c], "L").resize((tile_w, tile_h), Image.Resampling.NEAREST)
        canvas.paste(tile.convert("RGB"), (left, top))
        if c in dead:
            box = (left, top, left + tile_w - 1, top + tile_h - 1)
            draw.rectangle(box, outline=DEAD_COLOR, width=2)
            draw.line(box, fill=DEAD_COLOR, width=1)
            draw.line((box[0], box[3], box[2], box[1]), fill=DEAD_COLOR, width=1)
    return canvas


def _write_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def analyze_activations(
    run_dir: str | Path, image: str | Path, out: str | Path | None = None, log: Log = print
) -> ActivationReport:
    """Write one activation grid per conv layer for ``image`` and count dead channels.

    ``run_dir`` is a run folder with at least one checkpoint; ``image`` any
    picture Pillow reads; ``out`` the output folder (default
    ``RUN/analysis/activations``), created only once the inputs have been read.
    """
    run = load_run_model(run_dir)
    img = load_rgb(image)  # fails on a non-image before anything is written
    spec = run.config.model
    split = eval_split(run.info, spec.channels)
    if split is None:
        size = runs.run_image_size(run_dir, spec.crop_size)
        log(f"dataset {run.info.get('data_dir')} not found: {size}x{size} images (as the run "
            "records) and no eval-shard dead-channel count")
    else:
        size = split.images.shape[1]
    acts = conv_outputs(run.model, prepare_image(img, size, spec.crop_size, spec.channels))
    dead_in_image = {
        name: np.flatnonzero(~(a != 0).any(axis=(0, 1))).tolist() for name, a in acts.items()
    }
    dead_in_eval = None
    if split is not None:
        dead_in_eval = dead_channels(
            run.model, split, spec.crop_size, run.config.train.eval_batch_size
        )
    out = Path(out) if out is not None else Path(run_dir) / OUT_DIR
    pngs = []
    for name, a in acts.items():
        title = (f"{name} at step {run.step}: {a.shape[-1]} channels, "
                 f"{len(dead_in_image[name])} all zero on {Path(image).name} (red)")
        pngs.append(out / f"{Path(image).stem}-{name}.png")
        _write_png(activation_grid(a, dead_in_image[name], title), pngs[-1])
    return ActivationReport(
        run.step, pngs, {n: a.shape[-1] for n, a in acts.items()}, dead_in_image, dead_in_eval,
        0 if split is None else len(split),
    )


def format_activations(report: ActivationReport) -> str:
    """Per conv layer: channels, all-zero on the image, dead on the eval shard; then the PNGs."""
    lines = [f"checkpoint step {report.step}", f"{'layer':6s} {'channels':>8s} "
             f"{'zero on image':>13s} {'dead on eval':>12s}"]
    for name, channels in report.channels.items():
        on_eval = "-" if report.dead_in_eval is None else str(len(report.dead_in_eval[name]))
        lines.append(f"{name:6s} {channels:8d} {len(report.dead_in_image[name]):13d} "
                     f"{on_eval:>12s}")
    if report.dead_in_eval is not None:
        lines.append(f"(dead on eval = zero output for all {report.eval_images} held-out images)")
    lines += [f"Wrote {p}" for p in report.pngs]
    return "\n".join(lines)
