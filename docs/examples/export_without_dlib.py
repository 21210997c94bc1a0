"""Time an export with a dlib128 head naming faces in a process where dlib cannot be imported.

    python docs/examples/export_without_dlib.py models/orl-sm ../shared/datasets/orl --faces 40

Takes every n-th picture of FOLDER so that ``--faces`` of them spread over all people, cuts
the export's inputs with dlib here (``Predictor.model_inputs``: a head's chips, or an
ensemble's ``image`` and ``chips``; timed one face at a time), then starts a second Python in
which ``import dlib`` (and the weights package) fails, loads the EXPORT there and names the
faces: one face per call (median and 95th percentile) and all of them in one call. Prints the
times and the load average before and after.
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
inputs = dict(np.load(sys.argv[2]))  # by input name; "_one" for a network's one input
count = len(next(iter(inputs.values())))


def rows(start, stop):
    part = {name: array[start:stop] for name, array in inputs.items()}
    return part.get("_one", part)


predictor.outputs_for_model_inputs(rows(0, 1))  # warm-up: the graph traced once
predictor.outputs_for_model_inputs(rows(0, count))
one = []
for i in range(count):
    start = time.perf_counter()
    predictor.outputs_for_model_inputs(rows(i, i + 1))
    one.append(time.perf_counter() - start)
start = time.perf_counter()
faces = predictor.recognize_model_inputs(rows(0, count), top_k=1)
batch = (time.perf_counter() - start) / count
print(f"without dlib: one face per call {np.median(one) * 1e3:.1f} ms median, "
      f"{np.percentile(one, 95) * 1e3:.1f} ms p95; {batch * 1e3:.1f} ms per face in one call "
      f"of {count}; {sum(f.known for f in faces)} of {len(faces)} named")
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
    export.model_inputs(pictures[:1])  # warm-up: dlib's models loaded
    took = []
    for picture in pictures:
        start = time.perf_counter()
        export.model_inputs([picture])
        took.append(time.perf_counter() - start)
    print(f"inputs (dlib's chips): {np.median(took) * 1e3:.1f} ms median per face")
    inputs = export.model_inputs(pictures)
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp, "inputs.npz"), **(inputs if isinstance(inputs, dict) else
                                             {"_one": inputs}))
        subprocess.run([sys.executable, "-c", WITHOUT_DLIB, str(args.export),
                        str(Path(tmp, "inputs.npz"))], check=True)
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
