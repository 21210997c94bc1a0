"""The labeling page's suspects panel: named faces whose name looks wrong, most suspect first
(the confident-learning ranking of `dataset audit`), fixed through the page's own decisions.

The faces are made by hand (tests/labelkit.py: each person's descriptors a random direction
plus small noise), and a few are named as someone else on purpose: the injected errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from labelkit import Photos, folders, make_photos

pytest.importorskip("dlib", reason="the dlib extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
pytest.importorskip("cleanlab", reason="the audit extra is not installed")
pytest.importorskip("sklearn", reason="the audit extra is not installed")
from test_label import client_for, decide  # the page's HTTP calls, as test_label.py plays them

from facefold.label.session import SUSPECT_FOLDS

PEOPLE = {"ann": 8, "bob": 8, "cy": 8, "dee": 8}


@pytest.fixture
def swapped(tmp_path: Path) -> tuple[Photos, dict[str, tuple[str, str]]]:
    """Every face named through the page, but ann's 3rd face named Bob and cy's 5th named
    Dee: ``(kit, {face: (given, true)})``."""
    kit = make_photos(tmp_path, PEOPLE, seed=3)
    wrong = {kit.ids_of("ann")[2]: ("Bob", "Ann"), kit.ids_of("cy")[4]: ("Dee", "Cy")}
    client = client_for(kit)
    for person in PEOPLE:
        right = [f for f in kit.ids_of(person) if f not in wrong]
        decide(client, action="name", faces=right, name=person.title())
    for face, (given, _) in wrong.items():
        decide(client, action="name", faces=[face], name=given)
    assert client.get("/api/state").json()["groups"] == []
    return kit, wrong


def test_injected_wrong_names_top_the_suspects(swapped):
    kit, wrong = swapped
    answer = client_for(kit).get("/api/suspects").json()
    assert answer["labeled"] == 32 and answer["people"] == 4
    suspects = answer["suspects"]
    assert {s["id"] for s in suspects[:2]} == set(wrong)
    for s in suspects[:2]:
        assert (s["given"], s["suggested"]) == wrong[s["id"]]
        assert s["kind"] in ("label", "ambiguous")
    scores = [s["score"] for s in suspects]
    assert scores == sorted(scores, reverse=True)
    assert all(s["score"] < suspects[1]["score"] for s in suspects[2:])


def test_a_suspects_score_is_one_minus_its_out_of_fold_probability(swapped):
    """An independent reference: scikit-learn's regression fit by hand on the faces of the
    other folds (each person's faces, sorted by id, dealt round SUSPECT_FOLDS folds)."""
    from sklearn.linear_model import LogisticRegression

    kit, wrong = swapped
    top = client_for(kit).get("/api/suspects").json()["suspects"][0]
    name = {f: p.title() for f, p in kit.truth.items()} | {f: g for f, (g, _) in wrong.items()}
    people = sorted(set(name.values()))
    fold = {}
    for person in people:
        for k, face in enumerate(sorted(f for f in name if name[f] == person)):
            fold[face] = k % SUSPECT_FOLDS
    train = [f for f in sorted(name) if fold[f] != fold[top["id"]]]
    model = LogisticRegression(C=1.0, max_iter=2000).fit(
        np.stack([kit.store.vectors[f] for f in train]).astype(np.float64),
        [people.index(name[f]) for f in train])
    p = model.predict_proba(kit.store.vectors[top["id"]][None].astype(np.float64))[0]
    assert top["score"] == pytest.approx(1 - p[people.index(top["given"])], abs=1e-4)
    assert people[int(np.argmax(p))] == top["suggested"]


def test_moving_a_suspect_fixes_the_folder_and_keep_hides_it_after_a_restart(swapped):
    kit, wrong = swapped
    client = client_for(kit)
    first, second = client.get("/api/suspects").json()["suspects"][:2]
    assert first["suggested"] == wrong[first["id"]][1]  # the person it truly is
    # Move: the page names the face as the suggested person, one decision in the log.
    decide(client, action="name", faces=[first["id"]], name=first["suggested"])
    photo = Path(kit.store.faces[first["id"]].name).name
    assert photo in folders(kit.faces)[first["suggested"]]
    assert photo not in folders(kit.faces)[first["given"]]
    # Keep: the face stays under its name and leaves the list, also after a restart.
    decide(client, action="confirm", faces=[second["id"]])
    again = client_for(kit)
    ids = [s["id"] for s in again.get("/api/suspects").json()["suspects"]]
    assert first["id"] not in ids and second["id"] not in ids
    assert Path(kit.store.faces[second["id"]].name).name in folders(kit.faces)[second["given"]]
    # Undo the keep: the face is listed again.
    decide(again, action="undo")
    ids = [s["id"] for s in again.get("/api/suspects").json()["suspects"]]
    assert ids[0] == second["id"]


def test_reject_from_the_panel_and_refusals(swapped):
    kit, _ = swapped
    client = client_for(kit)
    top = client.get("/api/suspects").json()["suspects"][0]
    state = decide(client, action="reject", faces=[top["id"]], reason="someone-else")
    assert top["id"] in {f["id"] for f in state["rejected"]}
    assert top["id"] not in {s["id"] for s in client.get("/api/suspects").json()["suspects"]}
    response = client.post("/api/decide", json={"action": "confirm", "faces": [top["id"]]})
    assert response.status_code == 400 and "not named" in response.json()["error"]
    response = client.post("/api/decide", json={"action": "confirm", "faces": []})
    assert response.status_code == 400 and "at least one face" in response.json()["error"]


def test_no_suspects_before_two_people_are_named(tmp_path):
    kit = make_photos(tmp_path, {"ann": 4, "bob": 3})
    client = client_for(kit)
    assert client.get("/api/suspects").json() == {"suspects": [], "labeled": 0, "people": 0}
    decide(client, action="name", faces=kit.ids_of("ann"), name="Ann")
    assert client.get("/api/suspects").json() == {"suspects": [], "labeled": 4, "people": 1}


def test_without_the_audit_extra_the_list_names_the_pip_command(swapped, monkeypatch):
    kit, _ = swapped
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    response = client_for(kit).get("/api/suspects")
    assert response.status_code == 503
    error = response.json()["error"]
    assert "the suspects panel needs cleanlab" in error and "facefold[audit]" in error
