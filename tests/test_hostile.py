"""Hostile input: the server, ``predict`` and ``dataset inspect`` answer 4xx, never 500 or a
traceback, never balloon, and keep answering.

Every crafted file is made here (no binary fixtures). Each hostile request is followed by a
valid one that must still get 200. The server's limits are those of :class:`Limits` unless a
test says otherwise.
"""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_dataset
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("python_multipart", reason="the serve extra (python-multipart) is missing")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
with warnings.catch_warnings():  # Starlette 1.x nudges from httpx to httpx2; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import facefold.predict.predictor as predictor_module  # where face_crops looks load_detector up
from facefold import serve
from facefold.cli import main
from facefold.data.images import (
    ImageTooLargeError,
    ImageTooSmallError,
    load_rgb,
)
from facefold.data.jpegcheck import jpeg_stream_problem
from facefold.faces import detect
from facefold.predict import Predictor, predict_files
from facefold.serve import Limits, UploadError, create_app
from facefold.serve import app as serve_app

pytestmark = pytest.mark.filterwarnings(
    "ignore:Corrupt EXIF data:UserWarning",  # Pillow, reading the crafted EXIF
    "ignore:IM image format is deprecated:DeprecationWarning",  # writing the IM sample
)

BASE = "http://127.0.0.1"  # a Host the app allows; TestClient's own "testserver" is refused
SIXTEEN_BIT_36MP = (6928, 5196)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    # raise_server_exceptions (the default): an unhandled error fails the test, not just a 500.
    with TestClient(create_app(predictor), base_url=BASE) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def no_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-picture rule (fast, and the same whether or not MTCNN is installed)."""
    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)
    monkeypatch.setattr(serve_app, "load_detector", lambda: None)  # /api/info asks too


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def face_crop(seed: int = 0, side: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def post(client: TestClient, data: bytes, name: str = "photo.png", **kwargs):
    return client.post("/api/predict", files={"file": (name, data, "image/png")}, **kwargs)


def assert_still_serving(client: TestClient) -> None:
    response = post(client, encode(face_crop(7)))
    assert response.status_code == 200, response.text


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, before_idat: bytes = b"") -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, with almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + before_idat
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def sixteen_bit_png(size: tuple[int, int]) -> bytes:
    """A flat 16-bit grayscale PNG: tens of KB on the wire, width x height x 2 bytes decoded."""
    return encode(Image.new("I;16", size, 1000))


def inverted(data: bytes, offset: int, count: int = 16) -> bytes:
    out = bytearray(data)
    for i in range(offset, offset + count):
        out[i] ^= 0xFF
    return bytes(out)


# ---------------------------------------------------------------- a corpus of crafted files

OTHER_FORMATS = ["EPS", "ICO", "TGA", "PCX", "SGI", "IM", "DDS", "QOI", "BLP", "ICNS",
                 "SPIDER", "MSP", "XBM", "JPEG2000", "DIB"]


def other_format(fmt: str) -> bytes:
    """A small picture in a format Pillow writes but uploads may not use."""
    image = face_crop(1, 32)
    if fmt in ("MSP", "XBM"):
        image = image.convert("1")
    elif fmt == "SPIDER":
        image = image.convert("F")
    elif fmt == "BLP":
        image = image.convert("P")
    try:
        return encode(image, fmt)
    except (OSError, KeyError, ValueError) as err:  # a writer this Pillow build lacks
        pytest.skip(f"Pillow cannot write {fmt} here ({err})")


def ztxt_bomb() -> bytes:
    """A 1x1 PNG with a text chunk that inflates to 100 MB (Pillow caps it)."""
    text = b"Comment\0\0" + zlib.compress(b"\0" * 100_000_000, 9)
    return png_declaring(1, 1, png_chunk(b"zTXt", text))


def bad_bmp() -> bytes:
    """A BMP header declaring 0 x -5 pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, 0, -5, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff_pointing_outside() -> bytes:
    """A TIFF whose first IFD lies beyond the end of the file."""
    return b"II*\0" + struct.pack("<I", 10**9)


def garbage_exif_jpeg() -> bytes:
    exif = b"Exif\0\0II*\0" + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\xff" * 64
    return encode(face_crop(2), "JPEG", exif=exif)


CORPUS: dict[str, tuple[Callable[[], bytes], int | tuple[int, ...], str]] = {
    # name: (payload, status or allowed statuses, text the error must contain)
    "3000x1 png": (lambda: encode(Image.new("RGB", (3000, 1))), 422, "too small"),
    "40000x1 png": (lambda: encode(Image.new("RGB", (40000, 1))), 422, "too small"),
    "1x1 png": (lambda: encode(Image.new("RGB", (1, 1), (200, 150, 120))), 422, "too small"),
    "19x19 png": (lambda: encode(face_crop(3, 19)), 422, "at least 20 pixels"),
    "declares 100000x100000": (lambda: png_declaring(100_000, 100_000), 413, "large"),
    "declares 8000x6000": (lambda: png_declaring(8000, 6000), 413, "pixels"),
    "gif declares 65535x65535": (lambda: b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
                                 + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
                                 + b"\x02\x02\x4c\x01\x00;", 413, "large"),
    "ztxt bomb": (ztxt_bomb, (400, 415, 200), ""),
    "bmp 0x-5": (bad_bmp, (400, 415), ""),
    "tiff ifd outside": (tiff_pointing_outside, (400, 415), ""),
    "garbage exif": (garbage_exif_jpeg, (200, 400), ""),
    "png bad header crc": (lambda: inverted(encode(face_crop(4)), 29, 4), (400, 415), ""),
    "jpeg soi only": (lambda: b"\xff\xd8\xff", (400, 415), ""),
    "two thirds of a jpeg": (lambda: (lambda d: d[: len(d) * 2 // 3])(
        encode(face_crop(5, 64), "JPEG")), 400, "corrupt or truncated"),
    "text": (lambda: b"hello, world\n" * 100, 415, "JPEG, PNG, WebP, BMP, GIF, TIFF or PGM/PPM"),
    "html": (lambda: b"<html><script>alert(1)</script></html>", 415, "not an image"),
    "zeros": (lambda: b"\0" * 5000, 415, "not an image"),
    "empty": (lambda: b"", 400, "empty"),
    **{f"format {fmt}": ((lambda fmt=fmt: other_format(fmt)), 415, "not an image")
       for fmt in OTHER_FORMATS},
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_hostile_file_gets_a_clear_4xx_and_the_server_keeps_serving(client, case):
    make, status, text = CORPUS[case]
    response = post(client, make(), "x.bin")
    allowed = status if isinstance(status, tuple) else (status,)
    assert response.status_code in allowed, response.text
    assert "Traceback" not in response.text
    if response.status_code != 200:
        assert text in response.json()["error"]
    assert_still_serving(client)


def test_eps_is_named_and_never_reaches_ghostscript(client, monkeypatch):
    import subprocess

    def no_subprocess(*args, **kwargs):
        raise AssertionError("an upload started a subprocess")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    response = post(client, eps, "x.eps")
    assert response.status_code == 415
    message = response.json()["error"]
    assert "(it is EPS)" in message and "JPEG, PNG, WebP, BMP, GIF, TIFF or PGM/PPM" in message
    assert "Ghostscript" not in message


@pytest.mark.parametrize("fmt, options", [
    ("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("BMP", {}), ("GIF", {}), ("TIFF", {}),
    ("MPO", {}),  # a phone's multi-picture JPEG is a JPEG
])
def test_every_accepted_format_is_answered(client, fmt, options):
    response = post(client, encode(face_crop(6), fmt, **options), f"face.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 1


def test_file_names_are_shown_tamed(client):
    response = post(client, b"junk", "../../etc/" + "\x1b[31m" + "a" * 1000)
    message = response.json()["error"]
    assert response.status_code == 415
    assert "etc" not in message and "\x1b" not in message and len(message) < 400
    response = post(client, b"junk", "a" * 20_000)  # past the parser's header limit
    assert response.status_code == 400 and "malformed" in response.json()["error"]


@pytest.mark.parametrize("mode, name", [("L", "face.pgm"), ("RGB", "face.ppm")])
def test_pgm_and_ppm_are_read_from_disk_and_uploads_alike(client, tmp_path, mode, name):
    netpbm = encode(face_crop(8).convert(mode), "PPM")
    (tmp_path / name).write_bytes(netpbm)
    assert load_rgb(tmp_path / name).size == (40, 40)
    response = post(client, netpbm, name)
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 1  # the whole 40x40 picture is the face crop
    assert "PGM/PPM" in client.get("/api/info").json()["formats"]


# ---------------------------------------------------------------- multipart and requests


@pytest.mark.parametrize("boundary, status, text", [
    ("b" * 5000, 400, "at most 70"),
    ("b" * 71, 400, "at most 70"),
    ("", 400, "no boundary"),
    ("ok-boundary", 400, "malformed"),  # the body does not use it
])
def test_bad_multipart_is_a_400(client, boundary, status, text):
    body = b"--other\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nxx\r\n--other--\r\n"
    response = client.post("/api/predict", content=body,
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == status and text in response.json()["error"]
    assert_still_serving(client)


@pytest.mark.parametrize("body", [
    b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + b"\xff" * 100,  # no end
    b"--b\r\n" + b"X-Header: " + b"h" * 100_000 + b"\r\n\r\ndata\r\n--b--\r\n",
    b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % i
             for i in range(5000)) + b"--b--\r\n",
    b"\r\n\r\n--b--",
    b"--b\r\n\r\n\r\n--b--\r\n",  # a part without headers
])
def test_malformed_bodies_never_crash(client, body):
    response = client.post("/api/predict", content=body,
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert 400 <= response.status_code < 500, response.text
    assert_still_serving(client)


def many_parts(count: int, photo: bytes = b"") -> bytes:
    """A multipart body (boundary ``b``) of ``count`` empty parts, then the photo as 'file'."""
    empty = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n\r\n"
    return (empty * count + b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"face.png\"\r\n\r\n" + photo + b"\r\n--b--\r\n")


def test_a_body_of_150000_parts_is_refused_at_the_part_limit(client, monkeypatch):
    """Before: all 150,000 parts were parsed on the event loop (4.8 s during which the
    server answered nothing), then the photo behind them was answered. Now the parser
    stops at the ninth part."""
    from facefold.serve import upload

    body = many_parts(150_000, encode(face_crop()))
    assert 7_000_000 < len(body) < 10 * 2**20
    begun = []
    real_begin = upload.MultipartReader._begin
    monkeypatch.setattr(upload.MultipartReader, "_begin",
                        lambda self: begun.append(1) or real_begin(self))
    response = client.post("/api/predict", content=body,
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413, response.text
    assert "more than 8 parts" in response.json()["error"]
    assert len(begun) == Limits().max_parts + 1  # parsing stopped at the first part too many
    monkeypatch.undo()
    response = client.post("/api/predict", content=many_parts(7, encode(face_crop())),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 200, response.text  # 8 parts in all: still taken
    assert_still_serving(client)


def test_the_photo_is_read_from_a_body_fed_in_small_chunks():
    """The streaming parser gives the same file whatever the chunks (boundaries split)."""
    photo = encode(face_crop(5))
    body = many_parts(3, photo)
    for size in (1, 7, 64, len(body)):
        reader = serve.MultipartReader("multipart/form-data; boundary=b")
        for start in range(0, len(body), size):
            reader.feed(body[start:start + size])
        assert reader.finish() == ("face.png", photo)


def test_a_client_address_has_at_most_per_client_uploads_in_progress():
    reception = serve.Reception(per_client=2, max_bytes=100)
    with reception.enter("10.0.0.1"), reception.enter("10.0.0.1"):
        with pytest.raises(UploadError) as err, reception.enter("10.0.0.1"):
            pass
        assert err.value.status == 429 and err.value.headers["Retry-After"].isdigit()
        with reception.enter("10.0.0.2") as charge:  # another client is not held up
            charge(60)
            with pytest.raises(UploadError) as err:
                charge(41)  # 101 bytes of bodies in memory: over the budget
            assert err.value.status == 503 and "in memory" in err.value.message
            charge(40)
            assert reception.bytes == 100
    assert reception.bytes == 0 and not reception._clients
    with reception.enter("10.0.0.1"):  # every place is given back
        pass


class TrickleRequest:
    """A request whose multipart body arrives ``size`` bytes every ``pause`` seconds."""

    def __init__(self, size: int, pause: float, chunks: int = 10_000) -> None:
        self.headers = {"content-type": "multipart/form-data; boundary=b"}
        self.size, self.pause, self.chunks = size, pause, chunks

    async def stream(self):
        yield b"--b\r\n"
        for _ in range(self.chunks):
            await asyncio.sleep(self.pause)
            yield b"x" * self.size


def test_a_body_below_the_minimum_rate_is_cut_after_the_grace():
    limits = Limits(min_rate=1000, rate_grace=0.3, body_timeout=30)
    started = time.monotonic()
    with pytest.raises(UploadError) as err:  # 20 bytes a second
        asyncio.run(serve.read_upload(TrickleRequest(1, 0.05), 10_000, 30, limits=limits))
    assert err.value.status == 408 and "less than 1,000 bytes/s" in err.value.message
    assert time.monotonic() - started < 5
    # 40,000 bytes a second passes the rate check; the body then ends without a file part.
    with pytest.raises(UploadError) as err:
        asyncio.run(serve.read_upload(TrickleRequest(2000, 0.05, 12), 100_000, 30,
                                      limits=limits))
    assert err.value.status == 400, err.value.message


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/predict"), ("PUT", "/"), ("DELETE", "/api/info"),
    ("GET", "/../../etc/passwd"), ("GET", "/api/%00"), ("GET", "/docs"), ("GET", "/openapi.json"),
])
def test_other_routes_and_methods_are_4xx(client, method, path):
    response = client.request(method, path)
    assert 400 <= response.status_code < 500
    assert "root:" not in response.text


# ---------------------------------------------------------------- Host and Origin


@pytest.mark.parametrize("headers, status", [
    ({"host": "evil.example"}, 403),
    ({"host": "evil.example:8000"}, 403),
    ({"host": "127.0.0.1.evil.example"}, 403),
    ({"host": "localhost:8000"}, 200),
    ({"host": "LOCALHOST."}, 200),
    ({"host": "127.0.0.1:8000"}, 200),
    ({"host": "[::1]:8000"}, 200),
    ({"host": "127.0.0.1:8000", "origin": "http://evil.example"}, 403),
    ({"host": "127.0.0.1:8000", "origin": "null"}, 403),
    ({"host": "127.0.0.1:8000", "origin": "http://[broken"}, 403),
    ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, 200),
    ({"host": "127.0.0.1:8000", "origin": "http://localhost:3000"}, 200),
])
def test_host_and_origin_allow_list_stops_dns_rebinding(client, headers, status):
    for path in ("/", "/api/info"):
        response = client.get(path, headers=headers)
        assert response.status_code == status, (path, headers)
    if status == 403:
        assert "not allowed" in response.json()["error"]
        assert post(client, encode(face_crop()), headers=headers).status_code == 403


def test_allowed_hosts_follow_the_bound_address():
    names, literals = serve.allowed_hosts_for("127.0.0.1")
    assert names == {"127.0.0.1", "localhost", "::1"} and not literals
    names, literals = serve.allowed_hosts_for("0.0.0.0")
    assert socket.gethostname().lower() in names and literals
    check = serve.HostCheck(None, names, ip_literals=True)
    assert check.problem({b"host": b"192.168.1.20:8000"}) is None  # an address, not a name
    assert check.problem({b"host": b"attacker.example"}) is not None
    assert check.problem({b"host": b"192.168.1.20:8000",
                          b"origin": b"http://192.168.1.20:8000"}) is None  # same origin
    assert check.problem({b"host": b"192.168.1.20:8000",
                          b"origin": b"http://10.9.9.9"}) is not None


# ---------------------------------------------------------------- concurrency and memory


def test_excess_uploads_get_503_with_retry_after(predictor, monkeypatch):
    """One worker busy, one upload waiting: the third is turned away at once."""
    release = threading.Event()
    started = threading.Event()
    real_decode = serve.decode_upload

    def slow_decode(data, filename, limits=None):
        started.set()
        release.wait(10)
        return real_decode(data, filename, limits)

    monkeypatch.setattr(serve_app, "decode_upload", slow_decode)  # where the app looks
    app = create_app(predictor, limits=Limits(workers=1, queue=1))
    statuses: list[int] = []
    with TestClient(app, base_url=BASE) as test_client:
        def upload() -> None:
            statuses.append(post(test_client, encode(face_crop())).status_code)

        threads = [threading.Thread(target=upload) for _ in range(2)]
        for thread in threads:
            thread.start()
        assert started.wait(10)
        deadline = time.monotonic() + 10
        while app.state.gate.admitted < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = post(test_client, encode(face_crop()))
        assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
        assert "busy" in refused.json()["error"]
        release.set()
        for thread in threads:
            thread.join(20)
        assert statuses == [200, 200]
        assert_still_serving(test_client)


def test_a_worker_wait_that_times_out_is_a_503():
    gate = serve.Gate(workers=1, queue=1, wait_timeout=0.1)
    hold = threading.Event()

    async def scenario() -> None:
        first = asyncio.ensure_future(gate.run(hold.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(UploadError) as err:
            await gate.run(lambda: None)
        assert err.value.status == 503 and "Retry-After" in err.value.headers
        hold.set()
        assert await first  # started in time: it runs to the end even past the wait
        assert await gate.run(lambda: 7) == 7

    asyncio.run(scenario())
    gate.close()


def _peak_rss_reset() -> Callable[[], int] | None:
    """Reset the process's peak RSS; returns a function giving the growth since, or None."""
    def value(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = value("VmRSS")
    except (OSError, KeyError):
        return None
    return lambda: value("VmHWM") - base


def test_concurrent_16bit_36mp_uploads_stay_within_the_memory_budget(predictor):
    """4 uploads at once of a 80 KB PNG that decodes to 36 Mpx x 16 bit, 2 workers, no queue.

    Before the fix each took about 0.9 GB (float64 copies); now a worker holds at most the
    decoded picture and its RGB copy (about 230 MB), and uploads beyond the workers get 503.
    """
    data = sixteen_bit_png(SIXTEEN_BIT_36MP)
    assert len(data) < 200_000
    app = create_app(predictor, limits=Limits(workers=2, queue=0))
    barrier = threading.Barrier(4)
    responses = []
    with TestClient(app, base_url=BASE) as test_client:
        growth = _peak_rss_reset()

        def upload() -> None:
            barrier.wait()
            responses.append(post(test_client, data, "huge16.png"))

        threads = [threading.Thread(target=upload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        peak = growth() if growth else None
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {422, 503} and statuses.count(422) >= 2, statuses
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
        assert "not a face crop" in next(r for r in responses if r.status_code == 422).text
        if peak is not None:
            budget = 2 * Limits().max_decoded_bytes  # the stated bound: workers x picture budget
            assert peak < budget, f"peak RSS grew by {peak / 2**20:.0f} MB"
        assert_still_serving(test_client)


@pytest.mark.parametrize("picture, most_at_once", [
    (lambda: sixteen_bit_png(SIXTEEN_BIT_36MP), 1),  # 260 MB each: one after the other
    (lambda: encode(Image.new("RGB", (300, 200))), 2),  # 0.2 MB each: side by side
])
def test_workers_hold_decoded_pictures_within_one_budget(predictor, monkeypatch, picture,
                                                          most_at_once):
    """Two workers, two uploads at once: before, each decoded its picture whatever the
    other held (2 x 384 MB allowed); now the pictures held together fit one budget."""
    data = picture()
    real_decode = serve.decode_upload
    holding, most = [0], [0]
    lock = threading.Lock()

    def counting_decode(data, filename, limits=None):
        photo = real_decode(data, filename, limits)
        with lock:
            holding[0] += 1
            most[0] = max(most[0], holding[0])
        time.sleep(0.5)  # both uploads are in a worker by now
        photo.close = lambda real=photo.close: (holding.__setitem__(0, holding[0] - 1), real())
        return photo

    monkeypatch.setattr(serve_app, "decode_upload", counting_decode)
    app = create_app(predictor, limits=Limits(workers=2, queue=0))
    barrier = threading.Barrier(2)
    statuses: list[int] = []
    with TestClient(app, base_url=BASE) as test_client:
        def upload() -> None:
            barrier.wait()
            statuses.append(post(test_client, data, "big.png").status_code)

        threads = [threading.Thread(target=upload) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [422, 422] and most[0] == most_at_once
    assert app.state.memory.free == Limits().max_decoded_bytes  # all given back


def test_a_worker_waiting_too_long_for_memory_is_a_503():
    budget = serve.MemoryBudget(100, wait_timeout=0.1)
    with budget.hold(70):
        with pytest.raises(UploadError) as err, budget.hold(40):
            pass
        assert err.value.status == 503 and "busy" in err.value.message
        with budget.hold(30):
            assert budget.free == 0
    with budget.hold(10**9):  # more than the whole budget: takes it all
        assert budget.free == 0
    assert budget.free == 100


def test_decoded_byte_budget_is_checked_before_decoding():
    # The same megapixel: 16-bit with its float band temporaries needs 30 MB, 8-bit 13 MB.
    wide = encode(Image.new("I;16", (1000, 1000), 5))
    narrow = encode(Image.new("L", (1000, 1000), 5))
    limits = Limits(max_decoded_bytes=20 * 2**20)
    with pytest.raises(UploadError) as err:
        serve.decode_upload(wide, "wide.png", limits)
    assert err.value.status == 413 and "MB to decode" in err.value.message
    assert serve.decode_upload(narrow, "narrow.png", limits).size == (1000, 1000)
    with pytest.raises(ImageTooLargeError, match="allowed"):
        load_rgb(wide, "wide.png", max_bytes=20 * 2**20)


def test_wide_pictures_convert_without_float64_copies(monkeypatch):
    """A 16-bit picture is rescaled band by band (each band a fraction of the picture)."""
    from facefold.data import images

    seen: list[int] = []
    real = images._band_to_rgb

    def record(band):
        seen.append(band.width * band.height)
        return real(band)

    monkeypatch.setattr(images, "_band_to_rgb", record)
    array = (np.arange(3000 * 1000) % 65536).astype(np.uint16).reshape(1000, 3000)
    rgb = load_rgb(encode(Image.fromarray(array)), "ramp.png")
    assert len(seen) > 1 and max(seen) <= images._BAND_PIXELS
    expected = np.clip((array / 257.0).round(), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(rgb)[..., 0], expected)


# ---------------------------------------------------------------- timeouts


class StalledRequest:
    """Just enough of a Starlette request: headers and a body that stops after one chunk."""

    def __init__(self) -> None:
        self.headers = {"content-type": "multipart/form-data; boundary=b",
                        "content-length": "1000"}

    async def stream(self):
        yield b"--b\r\n"
        await asyncio.sleep(30)
        yield b""


def test_a_stalled_body_is_a_408():
    started = time.monotonic()
    with pytest.raises(UploadError) as err:
        asyncio.run(serve.read_upload(StalledRequest(), 10_000, timeout=0.2))
    assert err.value.status == 408 and "0.2 s" in err.value.message
    assert time.monotonic() - started < 5


@pytest.fixture
def live_server(predictor) -> Iterator[tuple[str, int]]:
    """The app under a real uvicorn on 127.0.0.1 with short timeouts; yields (host, port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limits = Limits(header_timeout=0.5, body_timeout=0.5)
    server = serve.make_server(create_app(predictor, limits=limits), "127.0.0.1", port, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        chunks.append(b"<still open>")
    return b"".join(chunks)


def test_idle_and_slow_connections_are_closed(live_server):
    host, port = live_server
    with socket.create_connection(live_server) as idle:  # connects, never sends a byte
        started = time.monotonic()
        assert read_all(idle) == b""  # closed by the server
        assert time.monotonic() - started < 4
    with socket.create_connection(live_server) as trickle:  # half a request line
        trickle.sendall(b"GET /api/in")
        assert read_all(trickle) == b""
    with socket.create_connection(live_server) as slow_body:
        slow_body.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")
        answer = read_all(slow_body)
        assert answer.startswith(b"HTTP/1.1 408") and b"not received within" in answer
    import httpx

    response = httpx.get(f"http://{host}:{port}/api/info")
    assert response.status_code == 200
    assert httpx.get(f"http://{host}:{port}/api/info",
                     headers={"host": "rebind.example"}).status_code == 403


# ---------------------------------------------------------------- predict and the detector


@pytest.mark.parametrize("size", [(3000, 1), (40000, 1), (40000, 24), (1, 5000), (0, 0)])
def test_detection_of_thin_pictures_finds_nothing_instead_of_dividing_by_zero(size):
    assert detect.detect_faces(Image.new("RGB", size)) == []  # decided before MTCNN is built


def test_predict_files_refuses_tiny_and_thin_pictures(predictor, tmp_path, monkeypatch):
    monkeypatch.setattr(predictor_module, "load_detector", lambda: detect)
    paths = {name: tmp_path / name for name in ("thin.png", "dot.png", "long.png", "x.eps")}
    Image.new("RGB", (3000, 1)).save(paths["thin.png"])
    Image.new("RGB", (1, 1)).save(paths["dot.png"])
    Image.new("RGB", (40000, 24)).save(paths["long.png"])
    paths["x.eps"].write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    results = predict_files(predictor, list(paths.values()), detect=True)
    errors = {Path(r["image"]).name: r["error"] for r in results}
    assert "too small" in errors["thin.png"] and "too small" in errors["dot.png"]
    assert "no face found" in errors["long.png"]
    assert "(it is EPS)" in errors["x.eps"]
    without_detect = predict_files(predictor, [paths["dot.png"]])
    assert "too small" in without_detect[0]["error"] and not without_detect[0]["faces"]


def test_cli_predict_detect_on_a_thin_picture_prints_an_error_not_a_traceback(
        predictor, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predictor_module, "load_detector", lambda: detect)
    Image.new("RGB", (3000, 1)).save(tmp_path / "thin.png")
    with pytest.raises(SystemExit) as exit_status:
        main(["predict", str(predictor.info.source), str(tmp_path / "thin.png"), "--detect"])
    assert exit_status.value.code == 1
    out = capsys.readouterr()
    assert "thin.png: error:" in out.out and "too small" in out.out
    assert "Traceback" not in out.out + out.err


def test_too_small_is_its_own_error():
    with pytest.raises(ImageTooSmallError, match="at least 20 pixels"):
        load_rgb(encode(Image.new("RGB", (5, 500))), "strip.png", min_side=20)


# ---------------------------------------------------------------- damaged JPEGs in a dataset


def test_inspect_reports_a_jpeg_with_16_inverted_bytes(tmp_path):
    import tensorflow as tf

    from facefold.data import records
    from facefold.data.inspect import DatasetError, inspect_dataset

    data = make_tiny_dataset(tmp_path / "data", classes=2, shards=2, per_shard=2)
    shard = data / "data-01.tfrecords"
    kept = list(records.read_shard(shard))
    raw = kept[1].image_raw
    scan = raw.index(b"\xff\xda") + 20
    # The first damage (16 bytes inverted, in the middle of the compressed data) that both
    # Pillow and TensorFlow decode without a word, yet which changes the picture.
    for offset in range(scan + (len(raw) - scan) // 3, len(raw) - 20):
        damaged = inverted(raw, offset)
        Image.open(io.BytesIO(damaged)).load()
        tf.io.decode_jpeg(damaged)
        if not np.array_equal(np.asarray(Image.open(io.BytesIO(damaged))),
                              np.asarray(Image.open(io.BytesIO(raw)))):
            break
    kept[1] = records.Record(kept[1].label, damaged, kept[1].source_sha256)
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in kept:
            writer.write(records.encode(record))
    with pytest.raises(DatasetError) as err:
        inspect_dataset(data)
    assert any(p.startswith("data-01.tfrecords record 1: bad image: image_raw is a damaged JPEG")
               for p in err.value.problems), err.value.problems


def test_jpeg_check_passes_every_valid_encoding_and_catches_most_damage():
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (56, 72, 3), np.uint8)).resize((97, 61))
    valid = [encode(smooth.convert(mode), "JPEG", **options)
             for mode in ("RGB", "L", "CMYK")
             for options in ({"quality": 95}, {"quality": 60, "subsampling": 0},
                             {"quality": 80, "subsampling": 1}, {"optimize": True},
                             {"restart_marker_blocks": 3}, {"progressive": True})]
    valid.append(encode(Image.new("RGB", (1, 1)), "JPEG"))
    assert [jpeg_stream_problem(raw) for raw in valid] == [None] * len(valid)
    raw = valid[0]
    scan = raw.index(b"\xff\xda") + 20
    offsets = range(scan, len(raw) - 16, 11)
    caught = sum(jpeg_stream_problem(inverted(raw, offset)) is not None for offset in offsets)
    # Huffman codes resynchronise: a few percent of damages leave every code valid and the
    # scan exactly as long; no check short of a checksum sees those.
    assert caught / len(offsets) > 0.75


# ---------------------------------------------------------------- fuzzing


hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SIGNATURES = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\0",
              b"MM\0*", b"RIFF\0\0\0\0WEBPVP8 ", b"%!PS", b"\0\0\1\0", b"P6\n"]
SEEDS = [encode(face_crop(9), "PNG"), encode(face_crop(9), "JPEG"), encode(face_crop(9), "GIF")]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@st.composite
def damaged_files(draw) -> bytes:
    """A real small picture with bytes overwritten and maybe cut short, or junk behind a
    format signature."""
    if draw(st.booleans()):
        data = bytearray(draw(st.sampled_from(SEEDS)))
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data[: draw(st.integers(1, len(data)))])
    return draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=300))


@FUZZ
@given(payload=damaged_files())
def test_fuzzed_uploads_are_answered_without_500(client, payload):
    response = post(client, payload, "fuzz.bin")
    assert response.status_code in (200, 400, 413, 415, 422), response.text
    body = response.json()
    assert ("faces" in body) if response.status_code == 200 else ("error" in body)


@FUZZ
@given(boundary=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
       body=st.binary(max_size=400),
       lead=st.sampled_from([b"", b"--b\r\n", b"--b\r\nContent-Disposition: form-data; "
                                                 b"name=\"file\"; filename=\"a\"\r\n\r\n"]))
def test_fuzzed_multipart_requests_are_answered_without_500(client, boundary, body, lead):
    content_type = "multipart/form-data; boundary=" + boundary
    response = client.post("/api/predict", content=lead + body,
                           headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, response.text
