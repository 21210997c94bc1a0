"""How many actions `facefold label` needs: a scripted person labels celeb21 crops, names hidden.

Copies PEOPLE × PER_ROUND crops of celeb21 per round into one folder as loose files with random
names (the person is known to this script only), opens the workbench on it and plays a person
through the page's own HTTP calls (FastAPI's TestClient on the same app): the first group on
the page (most certain first) is taken each time; faces in it that are someone else are named
with their person (one action per such person), faces of no one are rejected (one action),
then the rest is accepted when the proposed name is right (one action) or named (one action).
Naming the faces of someone else in a group counts as "move".
It stops when no group is left and checks that every folder holds exactly its person's faces.
Round 2 adds new crops of the same people to the folder and labels them the same way: the
names now come from the people labeled in round 1.

    PYTHONPATH=. python docs/examples/label_celeb21.py [--people 5] [--per-round 30]
        [--rounds 2] [--work /tmp/label-celeb21] [--model MODEL]

Prints one line per round (faces, actions and their kinds, actions per 10 faces, seconds)
and the machine. Needs the dlib, faces and serve extras and /work/shared/datasets/celeb21
(or ../shared/datasets/celeb21 beside the project).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

from facefold.label import open_session
from facefold.label.app import create_label_app
from facefold.machine import describe

ROOT = Path(__file__).resolve().parents[2]
CELEB21 = [Path("/work/shared/datasets/celeb21"), ROOT.parent / "shared/datasets/celeb21"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/label-celeb21"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = next(p for p in CELEB21 if p.is_dir())
    shutil.rmtree(args.work, ignore_errors=True)
    photos, faces = args.work / "photos", args.work / "faces"
    photos.mkdir(parents=True)
    rng = random.Random(args.seed)
    people = sorted(p for p in source.iterdir() if p.is_dir())[:args.people]
    picks = {p.name: rng.sample(sorted(p.glob("*.jpg")), args.per_round * args.rounds)
             for p in people}
    truth: dict[str, str] = {}  # file name in PHOTOS -> person
    print(f"{describe()}; load {os.getloadavg()[0]:.1f}")
    for round_number in range(1, args.rounds + 1):
        for person, files in picks.items():
            for path in files[(round_number - 1) * args.per_round:round_number * args.per_round]:
                name = f"{rng.getrandbits(64):016x}.jpg"
                shutil.copyfile(path, photos / name)
                truth[name] = person
        started = time.perf_counter()
        session = open_session(photos, faces, args.model, log=lambda _: None)
        opened = time.perf_counter() - started
        result = label_round(session, truth)
        check_folders(session, truth)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(result["kinds"].items()))
        whole = sum(f.endswith("-0") for f in session.pool)
        print(f"round {round_number}: {result['faces']} faces to label (all {len(truth)} "
              f"photos: {len(session.pool) - whole} faces found by the detector, {whole} "
              "taken whole), "
              f"{result['actions']} actions ({kinds}) = "
              f"{10 * result['actions'] / result['faces']:.2f} per 10 faces; "
              f"{opened:.1f} s to open (find, crop, embed the new faces), "
              f"{result['seconds']:.1f} s of HTTP calls; folders 100 % right; "
              f"load {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    session = open_session(photos, faces, args.model, log=lambda _: None)
    print(f"a restart with every photo seen: {time.perf_counter() - started:.1f} s to open, "
          f"{len(session.state.groups)} groups left; load {os.getloadavg()[0]:.1f}")


def label_round(session, truth: dict[str, str]) -> dict:
    """Play the person until no group is left; the actions taken, by kind."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    client = TestClient(create_label_app(session), base_url="http://127.0.0.1")
    kinds: Counter = Counter()
    faces = sum(len(g["faces"]) for g in client.get("/api/state").json()["groups"])
    started = time.perf_counter()

    def decide(kind: str = "", **decision) -> dict:
        response = client.post("/api/decide", json=decision)
        response.raise_for_status()
        kinds[kind or decision["action"]] += 1
        return response.json()

    state = client.get("/api/state").json()
    while state["groups"]:
        group = state["groups"][0]
        who = {f["id"]: person_of(session, f["id"], truth) for f in group["faces"]}
        majority = Counter(who.values()).most_common(1)[0][0]
        strays: dict[str | None, list[str]] = {}
        for face, person in who.items():
            if person != majority:
                strays.setdefault(person, []).append(face)
        for person, ids in strays.items():
            if person is None:
                state = decide(action="reject", faces=ids, reason="not-a-face")
            else:
                state = decide("move", action="name", faces=ids, name=person)
        rest = [f for f, p in who.items() if p == majority]
        if majority is None:
            state = decide(action="reject", faces=rest, reason="not-a-face")
        elif group["proposal"] and group["proposal"]["name"] == majority:
            state = decide(action="accept", faces=rest, name=majority)
        else:
            state = decide(action="name", faces=rest, name=majority)
    return {"faces": faces, "actions": sum(kinds.values()), "kinds": kinds,
            "seconds": time.perf_counter() - started}


def person_of(session, face: str, truth: dict[str, str]) -> str | None:
    """Whose face this is: the crop's person for its first face (a crop holds one person;
    a second face found in one is no face of theirs)."""
    record = session.store.faces[face]
    return truth[Path(record.photo).name] if face.endswith(("-0", "-1")) else None


def check_folders(session, truth: dict[str, str]) -> None:
    """Every face of a person in that person's folder, nothing else in any folder."""
    listed = {f"{p.name}/{f.name}" for p in session.out.iterdir()
              if p.is_dir() and not p.name.startswith(".") for f in p.iterdir()}
    assert listed == set(session.written), "the folders hold files the session did not write"
    for rel, face in session.written.items():
        assert person_of(session, face, truth) == rel.split("/")[0], rel
    expected = sum(1 for f in session.pool if person_of(session, f, truth) is not None)
    assert len(session.written) == expected, (len(session.written), expected)


if __name__ == "__main__":
    main()
