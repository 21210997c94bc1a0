"""The embedded default: a short cross-validation on SYNTHETIC faces, no user data needed.

It draws a deterministic synthetic face set (:mod:`facefold.data.synthetic`),
builds 3 balanced shards from it and runs a 3-fold cross-validation of the
2016 architecture on small 48x48 crops, then prints the 2016-style table.
It takes a few minutes at most on a 2-core CPU. The numbers say nothing about
real faces; they show that every stage runs and learns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from facefold.data.build import build_dataset
from facefold.data.synthetic import make_synthetic_faces
from facefold.evaluate.cv import CVResult, run_cv
from facefold.log import Log
from facefold.models.presets import resolve_config
from facefold.report import report_cv

MARKER = "demo.json"
PEOPLE, PER_PERSON, SHARDS = 10, 60, 3
IMAGE_SIZE, CROP = 56, 48  # the 2016 112/96 ratio, halved so the demo stays short
DEMO_OVERRIDES = {
    "model": {"crop_size": CROP, "input_size": CROP},
    # Cosine decay to 0, so the last evaluation is a settled point: at a constant rate it
    # moved by several points between code versions (1e-6 rounding differences suffice).
    "train": {"steps": 400, "eval_every": 100, "batch_size": 64, "lr_schedule": "cosine"},
}


def run_demo(
    out: str | Path = "runs/demo", log: Log = print, people: int = PEOPLE, steps: int = 400
) -> CVResult:
    """Generate synthetic faces, build shards, cross-validate; return the result.

    ``out`` is emptied first if it holds an earlier demo (never any other folder).
    ``people`` and ``steps`` exist so tests can run a smaller demo.
    """
    out = Path(out)
    if out.exists():
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out} exists and is not a facefold demo folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"synthetic": True, "people": people}) + "\n")
    log(f"SYNTHETIC demo: drawing {people} synthetic people x {PER_PERSON} faces …")
    faces = make_synthetic_faces(out / "faces", people=people, per_person=PER_PERSON, seed=0)
    build_dataset(faces, out / "data", shards=SHARDS, per_class=PER_PERSON, size=IMAGE_SIZE,
                  seed=0, log=log)
    config = resolve_config("seed", overrides=DEMO_OVERRIDES).replace(train={"steps": steps})
    result = run_cv(out / "data", config, out / "cv", log=log)
    written = report_cv(result, out / "cv", title="SYNTHETIC faces (demo)")
    log(f"\nHeld-out accuracy on SYNTHETIC faces (chance = {1 / people:.2f}):\n{written}")
    return result
