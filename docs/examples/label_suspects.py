"""How well the labeling page's suspects panel finds names given wrongly (recall at the swaps).

    PYTHONPATH=. python docs/examples/label_suspects.py DATA --work /tmp/label-suspects
        [--fraction 0.03] [--seed 0]

Copies the source pictures of the built dataset DATA into WORK/photos, one folder per person,
with ``round(fraction × crops)`` of them swapped in pairs between two people's folders
(:func:`facefold.evaluate.audit.inject_swaps`). Opens the workbench (``facefold label
WORK/photos --out WORK/faces``; faces found, aligned and embedded) and plays a person who
names every face as the folder it lies in, the swapped ones wrongly, one ``name`` decision per
person through the page's own HTTP calls. Then asks the page for its suspects
(``GET /api/suspects``) and prints how many of the swapped pictures are among the first k and
2k (k = the number swapped), the rank of each, the seconds each step took and the machine.
WORK must not exist.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

from facefold.evaluate.audit import inject_swaps
from facefold.label import open_session
from facefold.label.app import create_label_app
from facefold.machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a dataset built by `facefold dataset build`")
    parser.add_argument("--work", type=Path, required=True, help="new folder for the copies")
    parser.add_argument("--fraction", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    print(f"{describe()}; load {os.getloadavg()[0]:.1f}")
    photos = args.work / "photos"
    swaps = inject_swaps(args.data, photos, args.fraction, args.seed)
    started = time.perf_counter()
    session = open_session(photos, args.work / "faces", log=lambda _: None)
    opened = time.perf_counter() - started
    client = TestClient(create_label_app(session), base_url="http://127.0.0.1")
    # The person names every face as the folder its photo lies in.
    given: dict[str, list[str]] = {}
    for path, entry in session.store.paths.items():
        for face in session.store.photos[entry["id"]]:
            given.setdefault(Path(path).parent.name, []).append(face)
    for person, faces in sorted(given.items()):
        response = client.post("/api/decide", json={"action": "name", "faces": faces,
                                                    "name": person})
        response.raise_for_status()
    started = time.perf_counter()
    answer = client.get("/api/suspects").json()
    ranked = time.perf_counter() - started
    swapped = {face for s in swaps
               for face in session.store.photos[session.store.paths[str(s.file.resolve())]["id"]]}
    ids = [s["id"] for s in answer["suspects"]]
    ranks = sorted(ids.index(f) + 1 for f in swapped if f in ids)
    k = len(swapped)
    print(f"{answer['labeled']} faces named ({len(session.pool)} found in "
          f"{len(session.store.paths)} photos), {answer['people']} people; swapped faces: {k}; "
          f"listed: {len(ranks)} of {len(ids)} suspects; their ranks: {ranks}")
    print(f"recall@k={sum(r <= k for r in ranks) / k:.3f} "
          f"recall@2k={sum(r <= 2 * k for r in ranks) / k:.3f} (k={k})")
    print(f"open (find, crop, embed) {opened:.0f} s, suspects {ranked:.1f} s; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
