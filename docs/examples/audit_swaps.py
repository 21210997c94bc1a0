"""How well `dataset audit` finds labels swapped on purpose (recall at twice the swaps).

    python docs/examples/audit_swaps.py DATA --work /tmp/audit-swaps [--fraction 0.03] [--seed 0]

Copies the source pictures of the built dataset DATA (its manifest leads to them) into
WORK/src with ``round(fraction × crops)`` of them swapped in pairs between two people's
folders (:func:`facefold.evaluate.audit.inject_swaps`), builds WORK/data from it with DATA's
``--per-class``, ``--shards``, ``--size`` and near-duplicate distance (every copied picture
is kept), audits WORK/data, and prints how many of the swapped pictures are among the first
k and 2k suspects (k = the number swapped), the rank of each, and the seconds each step took.
WORK must not exist.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from facefold.data.build import build_dataset
from facefold.evaluate.audit import audit, inject_swaps, recall_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a dataset built by `facefold dataset build`")
    parser.add_argument("--work", type=Path, required=True, help="new folder for the copies")
    parser.add_argument("--fraction", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    manifest = json.loads((args.data / "manifest.json").read_text(encoding="utf-8"))
    started = time.perf_counter()
    swaps = inject_swaps(args.data, args.work / "src", args.fraction, args.seed)
    build_dataset(args.work / "src", args.work / "data", shards=manifest["shards"],
                  per_class=manifest["per_class"], size=manifest["size"], seed=manifest["seed"],
                  near_duplicates=manifest["near_dup_distance"], log=lambda _: None)
    built = time.perf_counter()
    suspects = audit(args.work / "data")
    done = time.perf_counter()

    k = len(swaps)
    swapped = {s.sha256 for s in swaps}
    ranks = sorted(i + 1 for i, s in enumerate(suspects) if s.sha256 in swapped)
    print(f"swapped pictures: {k}; listed: {len(ranks)}; their ranks: {ranks}")
    print(f"recall@k={recall_at(suspects, swapped, k):.3f} "
          f"recall@2k={recall_at(suspects, swapped, 2 * k):.3f} (k={k}, "
          f"{len(suspects)} suspects listed)")
    print(f"copy+build {built - started:.0f} s, audit {done - built:.0f} s")


if __name__ == "__main__":
    main()
