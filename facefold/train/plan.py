"""A command's plan of training runs, checked before the first one starts.

``fit`` trains its model and then one model per calibration group, ``cv`` one run per fold:
a batch size larger than the training images of the smallest of those runs used to fail
only when that run began, after the others had trained. :func:`check_batch_size` looks at
every run first and names the fix; :func:`check_image_size` does the same for pictures
smaller than the crop (an embedding head trains on them, and its model then cannot be
loaded).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from facefold.config import Config
from facefold.data.records import dataset_image_size, read_manifest
from facefold.models.families import family_of


def check_batch_size(config: Config, training_images: Mapping[str, int]) -> None:
    """``ValueError`` naming the run and the largest batch size that fits when a network of
    ``config`` (an ensemble: each member) has a batch size above the training images of one
    of the runs (``run name -> training images``)."""
    if not training_images:
        return
    run, fewest = min(training_images.items(), key=lambda item: item[1])
    batch = max(network.train.batch_size for network in family_of(config).networks(config))
    if batch > fewest:
        raise ValueError(
            f"batch size {batch} exceeds the {fewest} training images of {run} (the smallest "
            f"of the {len(training_images)} runs this command trains): give --batch-size "
            f"{fewest} or less (nothing was trained)")


def check_image_size(config: Config, data_dir: str | Path) -> None:
    """``ValueError`` naming both fixes when the pictures of ``data_dir`` are smaller than the
    crop of a network of ``config``."""
    for network in family_of(config).networks(config):
        crop = network.model.crop_size
        side = dataset_image_size(data_dir, crop)
        if side < crop:
            raise ValueError(
                f"{data_dir}: its pictures are {side}x{side} px, smaller than the "
                f"{crop}x{crop} crop of {network.preset}: set [model] crop_size (and "
                f"input_size) to {side} or less in --config, or build the dataset with "
                f"--size {crop} or more (nothing was trained)")


def check_calibration_groups(people: int, groups: int, data_dir: str | Path) -> None:
    """``ValueError`` naming the fix when ``fit``'s leave-people-out calibration over ``groups``
    groups of the ``people`` of ``data_dir`` would leave a group with one person: its
    verification threshold needs pairs of two strangers scored by one model, and the interval
    over strangers two of them. A dataset built with ``--per-class N`` keeps only people with N
    pictures left after near-duplicates are dropped; its manifest says how many each had, so
    the message names the ``--per-class`` that keeps enough of them."""
    if groups < 1 or people >= 2 * groups:
        return
    fix = f"give --groups {people // 2} or fewer" if people >= 4 else (
        "a calibration needs at least 4 people")
    counts = _people_counts(Path(data_dir))
    if len(counts) >= 2 * groups and len(counts) > people:
        per_class = sorted(counts, reverse=True)[2 * groups - 1]
        fix += (f", or rebuild the dataset with --per-class {per_class} (its manifest lists "
                f"{len(counts) - people} people dropped for having fewer than "
                f"{max(counts)} pictures after near-duplicates: --per-class {per_class} keeps "
                f"{sum(c >= per_class for c in counts)})")
    raise ValueError(
        f"{data_dir} holds {people} people: {groups} calibration groups would leave a group "
        f"with a single person, and calibrating needs two strangers per group: {fix} "
        "(nothing was trained)")


def _people_counts(data_dir: Path) -> list[int]:
    """How many pictures each person of the dataset's source had (kept ones: ``per_class``),
    from its manifest; empty without one."""
    manifest = read_manifest(data_dir)
    if not manifest:
        return []
    kept = [int(manifest["per_class"])] * len(manifest.get("people", []))
    return kept + [int(p["images"]) for p in manifest.get("dropped_people", [])]
