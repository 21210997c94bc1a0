"""``facefold bench --startup MODEL``: how long each deploy command takes from a cold process.

Every command runs as a user runs it, ``python -m facefold.cli ...`` in a new process, ``runs``
times; the rounds go through the commands in turn (so that a burst of load from other jobs
falls on all of them), and the median, min and max wall time of each are printed. ``serve``
is timed from its start to the first answer of ``POST /api/predict``. One more, traced, run of
each command says where its time went: the first import of TensorFlow, Keras, dlib, LiteRT,
MTCNN, the web server (each inclusive of what it imports; one imported inside another is
named so), the model folder's load, the face detector's build, the first inference call and,
for ``serve``, its first answer (each without the imports made inside it).

The pictures are face crops of ``pictures`` (a folder; default: synthetic faces drawn here).
Every timing names the CPU and the load average before and after (``os.getloadavg``): on a
machine shared with other jobs, compare the commands of one run, not runs of two sittings.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facefold.log import Log
from facefold.machine import cpu_model, usable_cores

PHOTOS = 10  # identify's pictures, as in the README's quick start
SERVE_TIMEOUT = 300.0  # seconds to the first answer before serve counts as failed

# Run in the child as `python -c TRACE ARGV_JSON OUT PHOTO`: the command as the console script
# runs it, with the first import of each package of WATCH, Predictor.load, the detector's build
# and the first inference call timed, written to OUT; `serve`'s server, instead of serving,
# answers PHOTO once as its route does. Nothing of facefold.bench is imported there.
TRACE = r"""
import builtins, json, sys, time
started = time.perf_counter()
WATCH = ("tensorflow", "keras", "dlib", "ai_edge_litert", "mtcnn", "fastapi", "uvicorn")
times, inside, stack, spent, loaded = {}, {}, [], [0.0], []
real_import = builtins.__import__

def timed(owner, attribute, key, first_only=False, wrap=None):
    real = getattr(owner, attribute)
    def call(*args, **kwargs):
        if first_only and key in times:
            return real(*args, **kwargs)
        t, before = time.perf_counter(), spent[0]
        try:
            return real(*args, **kwargs)
        finally:
            times[key] = time.perf_counter() - t - (spent[0] - before)
    setattr(owner, attribute, wrap(call) if wrap else call)

def keep(predictor):
    loaded.append(predictor)
    return predictor

def answer_once(*args, **kwargs):  # serve's server: one photo through its route's function
    from PIL import Image
    from facefold.serve.app import face_results
    class Once:
        def run(self):
            t, before = time.perf_counter(), spent[0]
            face_results(loaded[-1], Image.open(sys.argv[3]).convert("RGB"))
            times["first answer"] = time.perf_counter() - t - (spent[0] - before)
    return Once()

patched = set()

def patch():  # once each module is complete, not while it is being imported
    predictor = sys.modules.get("facefold.predict.predictor")
    if "predictor" not in patched and hasattr(predictor, "load_detector"):
        patched.add("predictor")
        timed(predictor.Predictor, "load", "model load",
              wrap=lambda f: classmethod(lambda cls, *a, **k: keep(f(*a, **k))))
        timed(predictor.Predictor, "outputs_for_arrays", "first call", first_only=True)
        timed(predictor, "load_detector", "detector", first_only=True)
    server = sys.modules.get("facefold.serve.server")
    if "server" not in patched and hasattr(server, "serve"):
        patched.add("server")
        server.make_server = answer_once

def timed_import(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.split(".")[0]
    if level or top not in WATCH or top in sys.modules or top in times:
        module = real_import(name, globals, locals, fromlist, level)
        patch()
        return module
    t = time.perf_counter()
    stack.append(top)
    try:
        return real_import(name, globals, locals, fromlist, level)
    finally:
        stack.pop()
        times[top] = time.perf_counter() - t
        if stack:
            inside[top] = stack[-1]
        else:
            spent[0] += times[top]

builtins.__import__ = timed_import
from facefold.cli import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as exit:
    status = exit.code
times["total"] = time.perf_counter() - started
with open(sys.argv[2], "w") as f:
    json.dump({"status": status, "times": times, "inside": inside,
               "modules": sorted(sys.modules)}, f)
"""


def startup_commands(model: Path, photos: Sequence[Path]) -> dict[str, list[str]]:
    """The timed commands (``facefold`` arguments) by name; ``serve`` is handled apart."""
    a, b = str(photos[0]), str(photos[1])
    many = [str(p) for p in photos[:PHOTOS]]
    return {
        "--help": ["--help"],
        "verify": ["verify", str(model), a, b],
        "verify --crops": ["verify", str(model), a, b, "--crops"],
        f"identify {len(many)}": ["identify", str(model), *many],
        f"identify {len(many)} --crops": ["identify", str(model), *many, "--crops"],
        "predict": ["predict", str(model), a],
        "serve": ["serve", str(model)],
    }


def synthetic_photos(folder: Path, count: int = PHOTOS) -> list[Path]:
    """``count`` synthetic 112x112 face pictures of different people written into ``folder``
    (nothing about their faces is real; they cost a command what a face crop costs)."""
    from PIL import Image

    from facefold.data.synthetic import identity_rng, image_rng, render_face, sample_identity

    paths = []
    for person in range(count):
        face = render_face(sample_identity(identity_rng(0, person)), image_rng(0, person, 0))
        path = folder / f"face-{person}.png"
        Image.fromarray(face).save(path)
        paths.append(path)
    return paths


def _environment() -> dict[str, str]:
    # The worktree or install this facefold comes from, for `python -m facefold.cli`.
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def _wall(argv: list[str]) -> tuple[float, int]:
    """Seconds of ``facefold ARGV`` in a new process, and its exit status."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "facefold.cli", *argv], env=_environment(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    return time.perf_counter() - started, done.returncode


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post_photo(url: str, photo: Path) -> bool:
    """Whether the server at ``url`` answered ``POST /api/predict`` of ``photo`` with 200."""
    boundary = "facefoldbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{photo.name}\"\r\nContent-Type: image/png\r\n\r\n").encode() + (
        photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(f"{url}/api/predict", body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _serve_wall(model: Path, photo: Path) -> tuple[float, int]:
    """Seconds from starting ``facefold serve`` to its first answer; status 0, or the
    server's exit status when it stopped first (1 when it did not answer in time)."""
    port = _free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "facefold.cli", "serve", str(model),
                               "--port", str(port)], env=_environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < SERVE_TIMEOUT:
            if server.poll() is not None:
                return time.perf_counter() - started, server.returncode or 1
            if _post_photo(f"http://127.0.0.1:{port}", photo):
                return time.perf_counter() - started, 0
            time.sleep(0.05)
        return time.perf_counter() - started, 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def _traced(argv: list[str], photo: Path) -> dict[str, Any]:
    """Where the time of ``facefold ARGV`` went (:data:`TRACE`), in a new process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "trace.json")
        subprocess.run([sys.executable, "-c", TRACE, json.dumps(argv), str(out), str(photo)],
                       env=_environment(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600)
        return json.loads(out.read_text()) if out.exists() else {}


def run_outcome(command: str, status: int) -> str:
    """How a timed run of ``command`` ended, by its exit status: "answered"; "refused" when
    ``identify`` exits 1 (it answered, and some picture had no face: a row with its error);
    or "failed" (a crash, a bad option: its time is not a start-up's). ``verify``'s 1 is an
    answer, "different people"."""
    if status == 0 or (status == 1 and command.startswith("verify")):
        return "answered"
    return "refused" if status == 1 and command.startswith("identify") else "failed"


def bench_startup(model: str | Path, pictures: str | Path | None = None, runs: int = 3,
                  log: Log = print) -> dict[str, Any]:
    """Cold-process wall times of the deploy commands on ``model`` (see the module docstring):
    ``{"machine", "load_before", "load_after", "runs", "commands": {name: {"seconds": [...],
    "median", "min", "max", "answered", "refused", "failed", "trace"}}}`` (how the runs
    ended: :func:`run_outcome`). ``FileNotFoundError`` for a missing model
    or picture folder; ``ValueError`` for fewer than 2 pictures or ``runs`` under 1."""
    model = Path(model)
    if not model.is_dir():
        raise FileNotFoundError(f"model folder {model} does not exist")
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    with tempfile.TemporaryDirectory(prefix="facefold-startup-") as tmp:
        photos = _pictures(pictures, Path(tmp))
        commands = startup_commands(model, photos)
        results: dict[str, dict[str, Any]] = {
            name: {"seconds": [], "answered": 0, "refused": 0, "failed": 0}
            for name in commands}
        load_before = os.getloadavg()
        for round_ in range(runs):
            for name, argv in commands.items():
                seconds, status = (_serve_wall(model, photos[0]) if name == "serve"
                                   else _wall(argv))
                results[name]["seconds"].append(seconds)
                results[name][run_outcome(name, status)] += 1
                log(f"[startup] round {round_ + 1}/{runs} {name}: {seconds:.2f} s")
        for name, argv in commands.items():
            results[name]["trace"] = _traced(argv, photos[0])
        load_after = os.getloadavg()
    for entry in results.values():
        entry.update(median=statistics.median(entry["seconds"]), min=min(entry["seconds"]),
                     max=max(entry["seconds"]))
    return {"machine": {"cpu": cpu_model(), "cores": usable_cores(),
                        "python": sys.version.split()[0]},
            "load_before": list(load_before), "load_after": list(load_after),
            "runs": runs, "model": str(model), "commands": results}


def _pictures(folder: str | Path | None, tmp: Path) -> list[Path]:
    if folder is None:
        return synthetic_photos(tmp)
    from facefold.recognizer import picture_files

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"picture folder {folder} does not exist")
    photos = picture_files([folder])[:PHOTOS]
    if len(photos) < 2:
        raise ValueError(f"{folder} holds {len(photos)} picture(s): give at least 2")
    return photos


# What a traced run reports, in order: first imports (TRACE's WATCH), then the steps.
IMPORTS = ("tensorflow", "keras", "dlib", "ai_edge_litert", "mtcnn", "fastapi", "uvicorn")
STEPS = ("model load", "detector", "first call", "first answer")


def format_bench_startup(result: dict[str, Any]) -> str:
    """The table of :func:`bench_startup`: a line per command, then where its time went."""
    machine = result["machine"]
    load = " ".join(f"{v:.2f}" for v in result["load_before"])
    after = " ".join(f"{v:.2f}" for v in result["load_after"])
    lines = [f"Start-up of the deploy commands on {result['model']}",
             f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
             f"load average {load} before, {after} after",
             f"cold process, {result['runs']} run(s) each (rounds alternate the commands)",
             "",
             f"{'command':<22} {'median s':>9} {'min s':>7} {'max s':>7}  where it went "
             "(traced run, s)"]
    for name, entry in result["commands"].items():
        trace = entry.get("trace") or {}
        times, inside = trace.get("times", {}), trace.get("inside", {})
        parts = [f"{'import ' if key in IMPORTS else ''}{key} {times[key]:.2f}"
                 + (f" (in {inside[key]})" if key in inside else "")
                 for key in (*IMPORTS, *STEPS) if key in times]
        if "total" in times:
            parts.append(f"total {times['total']:.2f}")
        failed = f"  {entry['failed']} FAILED" if entry["failed"] else ""
        if entry.get("refused"):
            failed += (f"  {entry['refused']} of {len(entry['seconds'])} refused a picture "
                       "(no face: a row with its error, exit status 1)")
        lines.append(f"{name:<22} {entry['median']:>9.2f} {entry['min']:>7.2f} "
                     f"{entry['max']:>7.2f}  {', '.join(parts)}{failed}")
    return "\n".join(lines)
