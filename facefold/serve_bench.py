"""Memory of ``facefold serve`` under concurrent uploads of small files that decode huge.

``python -m facefold.serve_bench [MODEL]`` starts ``facefold serve MODEL`` as a
child process on 127.0.0.1, warms it up with one good photo, then sends
``--uploads`` (default 10) uploads at once of a flat 16-bit PNG of ``--megapixels``
(default 36): with ``--kind grey`` (the default) about 80 KB on the wire and 72 MB
decoded, with ``--kind rgba`` (16-bit colour with alpha) about 300 KB and 288 MB. It
samples the server's resident memory every 10 ms and prints the machine's
CPU, the idle and peak RSS, the HTTP statuses (4xx and 503 expected, never
500) and whether the server stayed within ``--budget-mb`` (default 1536) above
idle and still answered a good photo afterwards. Without MODEL a tiny model
is trained on synthetic faces first (about a minute).

Not a test: the numbers depend on the machine; it exits with status 1 when
the budget is exceeded, a 5xx comes back or the server dies.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

from PIL import Image

SAMPLE_SECONDS = 0.01


def cpu_model() -> str:
    """The CPU's model name and the number of cores this process may use."""
    from facefold.machine import cpu_model as model
    from facefold.machine import usable_cores

    return f"{model()}, {usable_cores()} cores available"


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (or another ``/proc/PID/status`` size field) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"/proc/{pid}/status has no {field}")


KINDS = ("grey", "rgba")


def hostile_png(megapixels: float, kind: str = "grey") -> bytes:
    """A flat 16-bit PNG of about ``megapixels`` in 4:3: grayscale, or RGBA (``kind``)."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    size = (width, round(width * 3 / 4))
    if kind == "rgba":
        return rgba16_png(size)
    buffer = io.BytesIO()
    Image.new("I;16", size, 1000).save(buffer, format="PNG")
    return buffer.getvalue()


def rgba16_png(size: tuple[int, int], pixel: bytes = b"\x12\x34\x56\x78\x9a\xbc\xff\xff"
               ) -> bytes:
    """A flat 16-bit RGBA PNG (colour type 6, depth 16) of ``size``, written chunk by chunk:
    Pillow cannot write one, and the rows are compressed one at a time (never 8 bytes a
    pixel of the whole picture in memory)."""
    width, height = size
    row = b"\0" + pixel * width  # filter type 0, then the samples
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def good_photo() -> bytes:
    """A 64x64 face-crop-sized picture: answered 200 by any model."""
    import numpy as np

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_model(folder: Path) -> Path:
    """Train a few steps on synthetic faces; returns the run folder."""
    from facefold.data.build import build_dataset
    from facefold.data.synthetic import make_synthetic_faces
    from facefold.models.presets import resolve_config
    from facefold.train import train

    faces = make_synthetic_faces(folder / "faces", people=4, per_person=12, size=64)
    build_dataset(faces, folder / "data", shards=3, per_class=12, size=56, log=lambda _: None)
    config = resolve_config("seed", overrides={
        "model": {"crop_size": 48, "input_size": 48},
        "train": {"steps": 20, "eval_every": 20, "batch_size": 16, "precision": "float32",
                  "sparsity_every": 0},
    })
    train(folder / "data", config, folder / "run", [0], log=lambda _: None)
    return folder / "run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, KeyError):  # the process is gone
                return
            time.sleep(SAMPLE_SECONDS)


def start_server(model: Path, port: int) -> subprocess.Popen:
    """``facefold serve MODEL`` on 127.0.0.1:``port``, once it answers ``/api/info``."""
    import httpx

    server = subprocess.Popen(
        [sys.executable, "-m", "facefold.cli", "serve", str(model), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"facefold serve exited with status {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=60).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError("facefold serve did not answer within 180 s")


def post(url: str, data: bytes, name: str, client: str = "127.0.0.1") -> int:
    """The status of one upload sent from the address ``client``; 0 when the connection
    failed."""
    import httpx

    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=client)) as http:
            return http.post(url, files={"file": (name, data, "image/png")},
                             timeout=300).status_code
    except httpx.TransportError:
        return 0


def burst(url: str, data: bytes, count: int) -> Counter[int]:
    """``count`` uploads of ``data`` released at the same moment, each from an address of
    its own (127.0.0.2, .3 …: the server takes a few uploads at once per address); their
    statuses."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def one(client: str) -> None:
        barrier.wait()
        statuses.append(post(url, data, "huge16.png", client))

    threads = [threading.Thread(target=one, args=(f"127.0.0.{2 + i}",)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(statuses)


def run(model: Path, uploads: int, megapixels: float, rounds: int, budget_mb: float,
        kind: str = "grey") -> bool:
    """Start the server, measure, print the report; True when everything held."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/predict"
    data = hostile_png(megapixels, kind)
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f}")
    print(f"upload: {len(data):,} bytes, a {megapixels:g}-megapixel 16-bit {kind} PNG; "
          f"{uploads} at once, {rounds} rounds")
    server = start_server(model, port)
    try:
        warm = post(url, good_photo(), "face.png")
        time.sleep(1)
        idle = rss_bytes(server.pid)
        sampler = Sampler(server.pid)
        sampler.start()
        statuses: Counter[int] = Counter()
        started = time.monotonic()
        for _ in range(rounds):
            statuses += burst(url, data, uploads)
        elapsed = time.monotonic() - started
        after = post(url, good_photo(), "face.png")
        sampler.stop.set()
        sampler.join()
        alive = server.poll() is None
        high_water = rss_bytes(server.pid, "VmHWM") if alive else 0
    finally:
        server.terminate()
        server.wait(30)
    growth = sampler.peak - idle
    mb = 2**20
    print(f"warm-up photo: {warm}; idle RSS {idle / mb:,.0f} MB")
    print(f"peak RSS {sampler.peak / mb:,.0f} MB (sampled every {SAMPLE_SECONDS * 1000:g} ms; "
          f"VmHWM {high_water / mb:,.0f} MB including start-up), "
          f"{growth / mb:,.0f} MB above idle; budget {budget_mb:,.0f} MB")
    print(f"statuses in {elapsed:.1f} s: "
          + ", ".join(f"{status or 'no answer'} x{n}" for status, n in sorted(statuses.items())))
    print(f"good photo afterwards: {after}; server alive: {alive}")
    ok = (growth <= budget_mb * mb and alive and after == 200
          and all(400 <= status < 500 or status == 503 for status in statuses))
    print("OK" if ok else "FAILED")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facefold.serve_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?",
                        help="run or export folder (default: train a tiny synthetic model)")
    parser.add_argument("--uploads", type=int, default=10, help="uploads at once (default 10)")
    parser.add_argument("--megapixels", type=float, default=36, help="default 36")
    parser.add_argument("--kind", choices=KINDS, default="grey",
                        help="16-bit grey (default) or 16-bit RGBA pictures")
    parser.add_argument("--rounds", type=int, default=2, help="bursts one after the other")
    parser.add_argument("--budget-mb", type=float, default=1536,
                        help="allowed growth of resident memory above idle (default 1536)")
    args = parser.parse_args(argv)
    if not 1 <= args.uploads <= 250:
        parser.error(f"--uploads must be 1-250 (one loopback address each), got {args.uploads}")
    with tempfile.TemporaryDirectory(prefix="facefold-serve-bench-") as tmp:
        model = args.model
        if model is None:
            print("training a tiny model on synthetic faces …")
            model = tiny_model(Path(tmp))
        ok = run(model, args.uploads, args.megapixels, args.rounds, args.budget_mb,
                 args.kind)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
