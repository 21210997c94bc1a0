"""``fit --strangers DIR``: photos of people the model must never name, for its calibration.

The leave-people-out groups give a calibration only as many strangers as the dataset has
people; a user who knows look-alikes of their people can add them. The folder's layout:

- every sub-folder is one person (all the pictures inside it, sub-folders included);
- every picture directly in ``DIR`` is a person of its own: loose photos of unknown people
  can be anybody, and counting two photos of one person as two strangers only makes the
  interval over strangers (:mod:`facefold.models.identities`) a little narrower, where
  counting two people as one would hide the worse of them.

Each picture's face is found and aligned the way ``identify`` does (the largest face of a
photo; with ``detect=False`` the picture is taken whole as a face crop). A picture that
cannot be read or holds no face is left out and counted; a folder left with no picture at
all is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facefold.data.images import MIN_PICTURE_SIDE, ImageError, load_rgb
from facefold.log import Log
from facefold.predict.files import PICTURE_SUFFIXES, picture_files
from facefold.predict.predictor import NoFaceError, Predictor


@dataclass(frozen=True)
class StrangerFiles:
    """The pictures of ``folder`` by person: ``files[i]`` are person ``names[i]``'s."""

    folder: Path
    names: list[str]
    files: list[list[Path]]


@dataclass(frozen=True)
class Strangers:
    """Face crops of people never to be named: ``crops[k]`` shows person
    ``names[labels[k]]``; ``skipped`` pictures could not be read or held no face."""

    folder: Path
    names: list[str]
    crops: list[Image.Image]
    labels: np.ndarray
    skipped: list[str] = field(default_factory=list)


def list_strangers(folder: str | Path, known: Sequence[str] = ()) -> StrangerFiles:
    """The people of a ``--strangers`` folder (see the module docstring), checked before any
    training: ``ValueError`` naming the folder when it is missing or holds no picture, or
    naming a person who is also one of the ``known`` people."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--strangers {folder}: not a folder (give a folder of photos, one "
                         "sub-folder per person or one photo per person)")
    names, files = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found = picture_files([entry])
            if found:
                names.append(entry.name)
                files.append(found)
        elif entry.suffix.lower() in PICTURE_SUFFIXES:
            names.append(entry.name)  # with its suffix: never a sub-folder's name
            files.append([entry])
    both = sorted(set(names) & set(known))
    if both:
        raise ValueError(f"--strangers {folder}: {', '.join(both)} is one of the people the "
                         "model learns; strangers must be other people")
    if not names:
        raise ValueError(f"--strangers {folder}: no picture in it (files ending in "
                         f"{', '.join(sorted(PICTURE_SUFFIXES))})")
    return StrangerFiles(folder, names, files)


def crop_strangers(found: StrangerFiles, predictor: Predictor, detect: bool = True,
                   log: Log = print) -> Strangers:
    """The face crops of ``found``'s pictures, by the face detection and alignment of
    ``predictor`` (:meth:`~facefold.predict.Predictor.face_crops`, largest face first)."""
    names, crops, labels, skipped = [], [], [], []
    for name, files in zip(found.names, found.files, strict=True):
        mine = []
        for path in files:
            try:
                photo = load_rgb(path, min_side=MIN_PICTURE_SIDE)
                mine.append(predictor.face_crops(photo, detect)[0][1])
            except (ImageError, NoFaceError) as err:
                skipped.append(f"{path}: {err}")
        if mine:
            labels += [len(names)] * len(mine)
            names.append(name)
            crops += mine
    if skipped:
        log(f"[fit] --strangers: {len(skipped)} picture(s) left out (unreadable or no face), "
            f"e.g. {skipped[0]}")
    if not crops:
        raise ValueError(f"--strangers {found.folder}: no face found in any of its pictures")
    log(f"[fit] --strangers: {len(crops)} face(s) of {len(names)} people from {found.folder}")
    return Strangers(found.folder, names, crops, np.array(labels, np.int64), skipped)
