"""`facefold label` on real photos (ORL): faces found, cropped and embedded once, grouped by
person, then labeled through the HTTP API into folders `dataset build` takes."""

from __future__ import annotations

import shutil
import warnings

import pytest
from conftest import shared_dataset_path
from labelkit import folders

pytest.importorskip("dlib", reason="the dlib extra is not installed")
pytest.importorskip("mtcnn", reason="the faces extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import facefold.label.store as store_module
from facefold.data.build import build_dataset
from facefold.label import open_session
from facefold.label.app import create_label_app

PEOPLE = ("s1", "s2", "s3")


def test_orl_photos_labeled_end_to_end(tmp_path, monkeypatch):
    orl = shared_dataset_path("orl")
    photos = tmp_path / "photos"
    photos.mkdir()
    truth = {}
    for person in PEOPLE:
        for k in range(1, 5):
            name = f"{person}-{k}.pgm"  # loose files: the session never sees the person
            shutil.copyfile(orl / person / f"{k}.pgm", photos / name)
            truth[name] = person
    session = open_session(photos, tmp_path / "faces", log=lambda _: None)
    assert len(session.pool) == 12
    client = TestClient(create_label_app(session), base_url="http://127.0.0.1")
    state = client.get("/api/state").json()
    groups = [{truth[f["photo"]] for f in g["faces"]} for g in state["groups"]]
    assert sorted(map(sorted, groups)) == [["s1"], ["s2"], ["s3"]]  # one group a person
    assert all(len(g["faces"]) == 4 for g in state["groups"])
    for group in state["groups"]:
        person = truth[group["faces"][0]["photo"]]
        response = client.post("/api/decide", json={
            "action": "name", "faces": [f["id"] for f in group["faces"]], "name": person})
        assert response.status_code == 200, response.text
    assert folders(tmp_path / "faces") == {
        p: [f"{p}-{k}.png" for k in range(1, 5)] for p in PEOPLE}
    manifest = build_dataset(tmp_path / "faces", tmp_path / "data", shards=2, per_class=4,
                             log=lambda _: None)
    assert sorted(manifest["people"]) == list(PEOPLE)

    # A restart finds no photo to read again: the crops and descriptors are cached.
    def no_detection(*args, **kwargs):
        raise AssertionError("photos read again")

    monkeypatch.setattr(store_module, "collect_faces", no_detection)
    again = open_session(photos, tmp_path / "faces", log=lambda _: None)
    assert again.view()["groups"] == [] and len(again.state.person) == 12
