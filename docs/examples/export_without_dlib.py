"""Time an embedding head's export naming chips in a process where dlib cannot be imported.

    python docs/examples/export_without_dlib.py models/orl-sm ../shared/datasets/orl --faces 40

Takes every n-th picture of FOLDER so that ``--faces`` of them spread over all people, cuts
their chips with dlib here (``Predictor.chips``, timed one face at a time), then starts a
second Python in which ``import dlib`` (and the weights package) fails, loads the EXPORT
there and names the chips: one face per call (median and 95th percentile) and all of them
in one call. Prints the times and the load average before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".webp", ".bmp")

WITHOUT_DLIB = """
import importlib.abc, sys, time
import numpy as np

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dlib", "_dlib_pybind11", "face_recognition_models"):
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Blocked())
from facefold.predict import Predictor

predictor = Predictor.load(sys.argv[1])
chips = np.load(sys.argv[2])
predictor.outputs_for_model_inputs(chips[:1])  # warm-up: the graph traced once
predictor.outputs_for_model_inputs(chips)
one = []
for i in range(len(chips)):
    start = time.perf_counter()
    predictor.outputs_for_model_inputs(chips[i : i + 1])
    one.append(time.perf_counter() - start)
start = time.perf_counter()
faces = predictor.recognize_model_inputs(chips, top_k=1)
batch = (time.perf_counter() - start) / len(chips)
print(f"without dlib: one face per call {np.median(one) * 1e3:.1f} ms median, "
      f"{np.percentile(one, 95) * 1e3:.1f} ms p95; {batch * 1e3:.1f} ms per face in one call "
      f"of {len(chips)}; {sum(f.known for f in faces)} of {len(faces)} named")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--faces", type=int, default=40)
    args = parser.parse_args()
    from PIL import Image

    from facefold.predict import Predictor

    print(f"load average {Path('/proc/loadavg').read_text().split()[0]}")
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    files = files[:: max(1, len(files) // args.faces)][: args.faces]
    pictures = [Image.open(p).convert("RGB") for p in files]
    export = Predictor.load(args.export)
    export.chips(pictures[:1])  # warm-up: dlib's models loaded
    took = []
    for picture in pictures:
        start = time.perf_counter()
        export.chips([picture])
        took.append(time.perf_counter() - start)
    print(f"chips (dlib): {np.median(took) * 1e3:.1f} ms median per face")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp, "chips.npy"), export.chips(pictures))
        subprocess.run([sys.executable, "-c", WITHOUT_DLIB, str(args.export),
                        str(Path(tmp, "chips.npy"))], check=True)
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
