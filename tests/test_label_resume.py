"""`facefold label` as a real process, killed with SIGKILL mid-session: nothing lost, nothing
doubled; the person folders it writes then build a dataset with `dataset build`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from labelkit import folders, make_photos

pytest.importorskip("dlib", reason="the dlib extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from facefold.data.build import build_dataset
from facefold.data.records import read_labels
from facefold.label import read_log
from facefold.label.decisions import LOG_FILE
from facefold.label.store import STATE_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # two starts of the real command: about 40 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(photos: Path, faces: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "facefold.cli", "label", str(photos), "--out", str(faces),
         "--size", "32", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"facefold label ended: {process.stdout.read()}")
        try:
            call(port, "GET", "/api/state")
            return process
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    process.kill()
    pytest.fail("facefold label did not start within 180 s")


def call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_killed_server_loses_nothing_and_doubles_nothing(tmp_path):
    kit = make_photos(tmp_path, {"ann": 6, "bob": 6, "cy": 6})
    ann, bob, cy = kit.ids_of("ann"), kit.ids_of("bob"), kit.ids_of("cy")
    decisions = [
        {"action": "name", "faces": ann, "name": "Ann"},
        {"action": "split", "faces": bob[:2]},
        {"action": "name", "faces": bob[2:], "name": "Bob"},
        {"action": "accept", "faces": bob[:2], "name": "Bob"},
        {"action": "reject", "faces": cy[:1], "reason": "not-a-face"},
        {"action": "name", "faces": cy[1:], "name": "Cy"},
        {"action": "reject", "faces": cy[1:2], "reason": "unsure"},
        {"action": "undo"},
    ]
    for k, decision in enumerate(decisions):
        decision["request"] = f"request-{k}"
    port = free_port()
    process = start(kit.photos, kit.faces, port)
    for decision in decisions[:4]:
        call(port, "POST", "/api/decide", decision)
    seen = call(port, "GET", "/api/state")
    # The fifth decision is on its way when the server is killed: it may or may not have
    # landed; the page sends it again with the same request id after the restart.
    sender = threading.Thread(target=lambda: _try(port, decisions[4]))
    sender.start()
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    sender.join(timeout=30)
    landed = len(read_log(kit.faces / STATE_DIR / LOG_FILE))
    assert landed in (4, 5)

    process = start(kit.photos, kit.faces, port)
    try:
        after = call(port, "GET", "/api/state")
        if landed == 4:  # nothing lost: the state is the one the page saw
            assert after == seen
        for decision in decisions[4:]:
            last = call(port, "POST", "/api/decide", decision)
        call(port, "POST", "/api/decide", decisions[4])  # a retry once more: not doubled
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    log = read_log(kit.faces / STATE_DIR / LOG_FILE)
    assert [d["request"] for d in log] == [d["request"] for d in decisions]
    assert [d["seq"] for d in log] == list(range(1, 9))
    assert last["groups"] == [] and [r["id"] for r in last["rejected"]] == cy[:1]
    name = {face: kit.store.faces[face].name for face in kit.truth}
    expected = {"Ann": sorted(name[f] for f in ann), "Bob": sorted(name[f] for f in bob),
                "Cy": sorted(name[f] for f in cy[1:])}
    assert folders(kit.faces) == expected

    # The folders are a dataset's source as they are.
    manifest = build_dataset(kit.faces, tmp_path / "data", shards=2, per_class=5, size=32,
                             log=lambda _: None)
    assert sorted(read_labels(tmp_path / "data")) == ["Ann", "Bob", "Cy"]
    assert manifest["hidden_folders"] == [STATE_DIR]
    assert sum(map(sum, manifest["counts"])) == 15  # 5 of each of the 3 people
    assert manifest["skipped"] == [] and manifest["duplicates"] == []


def _try(port: int, decision: dict) -> None:
    with contextlib.suppress(OSError):  # the server was killed before it answered
        call(port, "POST", "/api/decide", decision)
