"""`facefold label`: every decision through the page's HTTP API, undo, the log, the folders.

The faces are made by hand (tests/labelkit.py: three people whose descriptors group them
exactly), so no detector runs; the grouping itself is dlib's Chinese whispers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from labelkit import Photos, add_photos, folders, make_photos

pytest.importorskip("dlib", reason="the dlib extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from facefold.label import open_session, read_log
from facefold.label.app import create_label_app
from facefold.label.decisions import LOG_FILE, DecisionLog, LogError, effective
from facefold.label.store import STATE_DIR

PEOPLE = {"ann": 5, "bob": 4, "cy": 3}


@pytest.fixture
def kit(tmp_path: Path) -> Photos:
    return make_photos(tmp_path, PEOPLE)


def client_for(kit: Photos) -> TestClient:
    session = open_session(kit.photos, kit.faces, size=kit.store.size, log=lambda _: None)
    return TestClient(create_label_app(session), base_url="http://127.0.0.1")


def decide(client: TestClient, **decision) -> dict:
    response = client.post("/api/decide", json=decision)
    assert response.status_code == 200, response.text
    return response.json()


def refused(client: TestClient, status: int = 400, **decision) -> str:
    response = client.post("/api/decide", json=decision)
    assert response.status_code == status, response.text
    return response.json()["error"]


def group_of(state: dict, person_faces: list[str]) -> dict:
    return next(g for g in state["groups"] if {f["id"] for f in g["faces"]} & set(person_faces))


def test_groups_are_the_people_largest_first_without_proposals(kit):
    state = client_for(kit).get("/api/state").json()
    got = [sorted(f["id"] for f in g["faces"]) for g in state["groups"]]
    assert got == [kit.ids_of("ann"), kit.ids_of("bob"), kit.ids_of("cy")]
    assert [g["proposal"] for g in state["groups"]] == [None] * 3
    assert state["people"] == [] and state["rejected"] == [] and not state["can_undo"]


def test_name_then_accept_a_proposal_writes_the_folders(kit):
    client = client_for(kit)
    state = decide(client, action="name", faces=kit.ids_of("ann"), name="Ann")
    assert folders(kit.faces) == {"Ann": [f"ann_{k}.png" for k in range(1, 6)]}
    # Bob's group is now proposed as the nearest person (Ann), far below the threshold.
    proposal = group_of(state, kit.ids_of("bob"))["proposal"]
    assert proposal["name"] == "Ann" and not proposal["confident"]
    assert proposal["similarity"] < 0.5
    state = decide(client, action="name", faces=kit.ids_of("bob")[:2], name="Bob")
    rest = group_of(state, kit.ids_of("bob"))
    assert rest["proposal"]["name"] == "Bob" and rest["proposal"]["confident"]
    # The mean cosine similarity of each of the group's faces with each of Bob's two faces.
    cosines = [np.dot(kit.store.vectors[f], kit.store.vectors[g])
               / np.linalg.norm(kit.store.vectors[f]) / np.linalg.norm(kit.store.vectors[g])
               for f in kit.ids_of("bob")[2:] for g in kit.ids_of("bob")[:2]]
    assert rest["proposal"]["similarity"] == pytest.approx(np.mean(cosines), abs=1e-4)
    assert [f["id"] for f in rest["faces"]] == sorted(  # most like Bob's faces first
        kit.ids_of("bob")[2:], key=lambda f: -np.mean([np.dot(
            kit.store.vectors[f], kit.store.vectors[g]) / np.linalg.norm(kit.store.vectors[f])
            / np.linalg.norm(kit.store.vectors[g]) for g in kit.ids_of("bob")[:2]]))
    # The confident group comes first: most certain first.
    assert state["groups"][0]["id"] == rest["id"]
    state = decide(client, action="accept", faces=[f["id"] for f in rest["faces"]], name="Bob")
    assert folders(kit.faces)["Bob"] == [f"bob_{k}.png" for k in range(1, 5)]
    crop = kit.store.crop_path(kit.ids_of("bob")[0])
    written = kit.faces / "Bob" / f"{kit.store.faces[kit.ids_of('bob')[0]].photo[:-4]}.png"
    assert written.read_bytes() == crop.read_bytes()
    assert [p["name"] for p in state["people"]] == ["Ann", "Bob"]
    assert [p["faces"] for p in state["people"]] == [5, 4]
    assert len(state["groups"]) == 1  # cy's


def test_merge_split_reject_and_undo(kit):
    client = client_for(kit)
    ann, bob, cy = kit.ids_of("ann"), kit.ids_of("bob"), kit.ids_of("cy")
    state = decide(client, action="merge", faces=bob + cy)
    assert sorted(f["id"] for f in group_of(state, cy)["faces"]) == sorted(bob + cy)
    assert len(state["groups"]) == 2
    state = decide(client, action="split", faces=cy[:1])
    assert [f["id"] for f in group_of(state, cy[:1])["faces"]] == cy[:1]
    assert len(state["groups"]) == 3
    for face, reason in zip(ann[:3], ("not-a-face", "someone-else", "unsure"), strict=True):
        state = decide(client, action="reject", faces=[face], reason=reason)
    assert {r["id"]: r["reason"] for r in state["rejected"]} == {
        ann[0]: "not-a-face", ann[1]: "someone-else", ann[2]: "unsure"}
    assert sorted(f["id"] for f in group_of(state, ann)["faces"]) == ann[3:]
    # Undo, one at a time, back to the start.
    state = decide(client, action="undo")
    assert ann[2] in {f["id"] for f in group_of(state, ann)["faces"]}
    for _ in range(4):
        state = decide(client, action="undo")
    assert [sorted(f["id"] for f in g["faces"]) for g in state["groups"]] == [ann, bob, cy]
    assert not state["can_undo"]
    assert "nothing to undo" in refused(client, action="undo")
    log = read_log(kit.faces / STATE_DIR / LOG_FILE)
    assert [d["action"] for d in log] == ["merge", "split", "reject", "reject", "reject"] + [
        "undo"] * 5
    assert [d["undone"] for d in log[5:]] == [5, 4, 3, 2, 1]
    assert effective(log) == []


def test_rename_moves_a_person_and_merges_into_an_existing_one(kit):
    client = client_for(kit)
    ann, bob = kit.ids_of("ann"), kit.ids_of("bob")
    decide(client, action="name", faces=ann, name="Anne")
    state = decide(client, action="rename", name="Anne", to="Ann")
    assert folders(kit.faces) == {"Ann": [f"ann_{k}.png" for k in range(1, 6)]}
    decide(client, action="name", faces=bob, name="Bob")
    state = decide(client, action="rename", name="Bob", to="Ann")  # one person after all
    assert [(p["name"], p["faces"]) for p in state["people"]] == [("Ann", 9)]
    assert len(folders(kit.faces)["Ann"]) == 9
    decide(client, action="undo")
    assert folders(kit.faces) == {"Ann": [f"ann_{k}.png" for k in range(1, 6)],
                                  "Bob": [f"bob_{k}.png" for k in range(1, 5)]}


def test_a_stray_face_is_named_alone_and_moved_between_people(kit):
    client = client_for(kit)
    ann, bob = kit.ids_of("ann"), kit.ids_of("bob")
    decide(client, action="name", faces=ann, name="Ann")
    decide(client, action="name", faces=bob[:1], name="Ann")  # a slip, corrected next
    assert len(folders(kit.faces)["Ann"]) == 6
    state = decide(client, action="name", faces=bob[:1], name="Bob")
    assert folders(kit.faces)["Bob"] == [kit.store.faces[bob[0]].name]
    assert len(folders(kit.faces)["Ann"]) == 5
    assert bob[0] not in {f["id"] for g in state["groups"] for f in g["faces"]}


def test_bad_decisions_are_refused_with_a_line(kit):
    client = client_for(kit)
    ann = kit.ids_of("ann")
    assert "no face" in refused(client, action="name", faces=["0123456789abcdef-1"], name="x")
    assert "unknown" in refused(client, action="name", faces=ann, name="Unknown")
    assert "'a/b'" in refused(client, action="name", faces=ann, name="a/b")
    assert "dot" in refused(client, action="name", faces=ann, name=".hidden")
    assert "action must be one of" in refused(client, action="delete", faces=ann)
    assert "reason" in refused(client, action="reject", faces=ann, reason="ugly")
    assert "two groups" in refused(client, action="merge", faces=ann[:1])
    assert "no person" in refused(client, action="rename", name="Zed", to="Z")
    assert "repeat" in refused(client, action="merge", faces=[ann[0], ann[1], ann[0]])
    assert "request" in refused(client, action="split", faces=ann[:1], request=7)
    # Only what the page may say is logged: the number and time are the log's own.
    decide(client, action="name", faces=ann, name="Ann", seq=99, time="x", undone=1)
    assert "not in a group" in refused(client, action="split", faces=ann[:1])
    decide(client, action="reject", faces=ann[:1], reason="unsure")
    assert "rejected already" in refused(client, action="reject", faces=ann[:1], reason="unsure")
    response = client.post("/api/decide", content=b"action=undo",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    response = client.post("/api/decide", content=b"{oops",
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    assert client.get("/api/crop/../../etc").status_code == 404
    assert client.get("/api/crop/0123456789abcdef-1").status_code == 404
    # Only the two good decisions are in the log.
    log = read_log(kit.faces / STATE_DIR / LOG_FILE)
    assert [(d["seq"], d["action"]) for d in log] == [(1, "name"), (2, "reject")]
    assert "undone" not in log[0] and log[0]["time"] != "x"


def test_host_and_origin_are_checked(kit):
    client = client_for(kit)
    assert client.get("/api/state").status_code == 200
    assert client.get("/api/state", headers={"host": "evil.example"}).status_code == 403
    response = client.post("/api/decide", json={"action": "undo"},
                           headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    assert read_log(kit.faces / STATE_DIR / LOG_FILE) == []


def test_the_page_documents_its_keys(kit):
    page = client_for(kit).get("/").text
    for key in ("<kbd>a</kbd> accept", "<kbd>n</kbd> name", "<kbd>m</kbd> merge",
                "<kbd>s</kbd> split", "<kbd>u</kbd> undo", "not a face, someone else, unsure"):
        assert key in page
    assert client_for(kit).get(f"/api/crop/{kit.ids_of('ann')[0]}").headers[
        "content-type"] == "image/png"


def test_a_restart_replays_the_log_and_a_retried_request_is_not_doubled(kit):
    client = client_for(kit)
    ann, bob, cy = kit.ids_of("ann"), kit.ids_of("bob"), kit.ids_of("cy")
    decide(client, action="name", faces=ann, name="Ann", request="r1")
    decide(client, action="split", faces=bob[:1], request="r2")
    decide(client, action="reject", faces=cy[:1], reason="unsure", request="r3")
    before = client.get("/api/state").json()
    again = client_for(kit)
    assert again.get("/api/state").json() == before
    assert decide(again, action="name", faces=ann, name="Ann", request="r1") == before
    assert len(read_log(kit.faces / STATE_DIR / LOG_FILE)) == 3
    assert folders(kit.faces) == {"Ann": [f"ann_{k}.png" for k in range(1, 6)]}


def test_new_photos_keep_earlier_decisions_and_get_proposals(kit):
    client = client_for(kit)
    ann = kit.ids_of("ann")
    decide(client, action="name", faces=ann, name="Ann")
    decide(client, action="name", faces=kit.ids_of("bob"), name="Bob")
    # A second round: more photos of the same people, in the same PHOTOS folder.
    before = set(kit.truth)
    add_photos(kit, {"ann": 3, "bob": 2}, np.random.default_rng(1), prefix="new_")
    new = {p: sorted(f for f in set(kit.truth) - before if kit.truth[f] == p)
           for p in ("ann", "bob")}
    state = client_for(kit).get("/api/state").json()
    proposals = {g["proposal"]["name"]: sorted(f["id"] for f in g["faces"])
                 for g in state["groups"] if g["proposal"]["confident"]}
    assert proposals == {"Ann": new["ann"], "Bob": new["bob"]}
    assert all(f not in ann for g in state["groups"] for f in g["faces"])  # not re-proposed
    assert len(folders(kit.faces)["Ann"]) == 5


def test_files_already_in_faces_are_kept_and_propose_their_person(kit):
    (kit.faces / "Ann").mkdir(parents=True)
    own = kit.faces / "Ann" / "ann_1.png"  # an earlier crop of Ann, of the same picture
    own.write_bytes(kit.store.crop_path(kit.ids_of("ann")[0]).read_bytes())
    client = client_for(kit)
    state = client.get("/api/state").json()
    assert state["people"][0]["name"] == "Ann" and state["people"][0]["existing"] == 1
    decide(client, action="name", faces=kit.ids_of("ann"), name="Ann")
    # Its name is taken by a file the session did not write: the new crop gets "-2".
    assert folders(kit.faces)["Ann"] == sorted(
        ["ann_1.png", "ann_1-2.png", "ann_2.png", "ann_3.png", "ann_4.png", "ann_5.png"])
    decide(client, action="undo")
    assert folders(kit.faces) == {"Ann": ["ann_1.png"]}  # never removed


def test_the_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / LOG_FILE
    log = DecisionLog(path)
    log.append({"action": "split", "faces": ["a"]})
    with open(path, "a") as f:
        f.write('{"seq": 2, "action": "spl')  # a write cut short by a kill
    assert [d["seq"] for d in read_log(path)] == [1]
    again = DecisionLog(path)
    assert again.append({"action": "undo", "undone": 1})["seq"] == 2
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2]
    path.write_text('{"seq": 1}\n' + path.read_text())
    with pytest.raises(LogError, match=":1: not a decision"):
        read_log(path)


def test_the_command_names_a_missing_folder_in_one_line(tmp_path, capsys):
    from facefold.cli import main

    status = main(["label", str(tmp_path / "nowhere"), "--out", str(tmp_path / "faces")])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"facefold: error: photo folder {tmp_path / 'nowhere'} does not exist"]
    (tmp_path / "photos").mkdir()
    assert main(["label", str(tmp_path / "photos"), "--out", str(tmp_path / "photos")]) == 1
    assert "must not be PHOTOS" in capsys.readouterr().err


def test_groups_confidently_of_one_person_are_shown_as_one(kit):
    session = open_session(kit.photos, kit.faces, size=kit.store.size, log=lambda _: None)
    bob, cy = kit.ids_of("bob"), kit.ids_of("cy")
    session.decide({"action": "name", "faces": bob[:1], "name": "Bob"})
    # Bob's other faces in two groups of the grouping, and one group split off by hand.
    session.state.groups = {"g2": bob[1:2], "g7": bob[2:3], "s9": bob[3:], "g3": cy}
    shown = session.view()["groups"]
    assert [(sorted(f["id"] for f in g["faces"]), g["proposal"]["name"],
             g["proposal"]["confident"]) for g in shown] == [
        (sorted(bob[1:3]), "Bob", True), (bob[3:], "Bob", True), (sorted(cy), "Bob", False)]
    assert [g["id"] for g in shown] == ["g2", "s9", "g3"]


def test_a_model_proposes_names_above_its_threshold(kit):
    from facefold.label.session import Session
    from facefold.label.store import open_store

    ann, bob = set(kit.ids_of("ann")), set(kit.ids_of("bob"))
    asked = []

    def namer(crops):  # a stand-in model: knows Ann, is unsure of one of Bob's faces
        asked.extend(crops)
        return [("Ann", 0.9) if p.stem in ann else ("Bob", 0.7) if p.stem in bob and
                p.stem != min(bob) else (None, 0.1) for p in crops]

    store = open_store(kit.faces / STATE_DIR, kit.store.size)
    session = Session(kit.faces, store, sorted(kit.truth), namer)
    assert sorted(p.stem for p in asked) == sorted(kit.truth)  # every face asked once
    shown = {frozenset(f["id"] for f in g["faces"]): g["proposal"]
             for g in session.view()["groups"]}
    assert shown[frozenset(ann)] == {"name": "Ann", "similarity": 0.9, "confident": True,
                                     "source": "model"}
    assert shown[frozenset(bob)]["name"] == "Bob"  # 3 of its 4 faces: the majority
    assert shown[frozenset(bob)]["similarity"] == pytest.approx(0.7)
    assert shown[frozenset(kit.ids_of("cy"))] is None  # unknown to it, nobody labeled yet
