"""The web server's JSON API through FastAPI's TestClient: good uploads, bad ones, limits."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("python_multipart", reason="the serve extra (python-multipart) is missing")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
with warnings.catch_warnings():  # Starlette 1.x nudges from httpx to httpx2; both work
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import facefold.predict.predictor as predictor_module
from facefold.predict import Predictor
from facefold.serve import create_app

LIMIT = 200_000  # bytes: small, so the "huge" upload stays cheap


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    # The app refuses Host names other than localhost's (DNS rebinding); TestClient's default
    # host is "testserver".
    return TestClient(create_app(predictor, max_upload_bytes=LIMIT), base_url="http://127.0.0.1")


@pytest.fixture(autouse=True)
def no_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole-picture rule, whether or not facefold.faces.detect is installed."""
    monkeypatch.setattr(predictor_module, "load_detector", lambda: None)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def face_crop(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))


def post(client: TestClient, data: bytes, name: str = "face.png", field: str = "file"):
    return client.post("/api/predict", files={field: (name, data, "image/png")})


def test_upload_a_face_crop(client, predictor):
    crop = face_crop()
    response = post(client, png(crop))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["width"], result["height"], result["whole_image"]) == (40, 40, True)
    (face,) = result["faces"]
    assert face["box"] == [0, 0, 40, 40] and len(face["top"]) == 3
    (expected,) = predictor.recognize([crop], top_k=3)
    assert [g["name"] for g in face["top"]] == [n for n, _ in expected.top]


def test_page_and_info(client, predictor):
    page = client.get("/")
    assert page.status_code == 200 and "api/predict" in page.text and "<canvas" not in page.text
    assert "http" not in page.text.split("<script>")[1]  # no CDN, nothing fetched from outside
    info = client.get("/api/info").json()
    assert info["people"] == predictor.labels and info["max_upload_bytes"] == LIMIT


@pytest.mark.parametrize(
    "payload, status, message",
    [
        (b"this is not a picture", 415, "not an image"),
        (b"", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 415, "not an image"),  # a signature, no chunks
    ],
)
def test_bad_files_get_a_clear_error(client, payload, status, message):
    response = post(client, payload)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_truncated_image(client):
    data = png(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)))
    response = post(client, data[: len(data) // 2], "half.png")
    assert response.status_code == 400
    assert "half.png: corrupt or truncated" in response.json()["error"]


def test_huge_upload_is_refused(client):
    response = post(client, b"\0" * (LIMIT + 1), "big.png")
    assert response.status_code == 413 and "limit" in response.json()["error"]
    response = post(client, b"\0" * (LIMIT * 2), "bigger.png")  # refused while streaming
    assert response.status_code == 413


def test_too_many_pixels_is_refused(client):
    response = post(client, png(Image.new("1", (8000, 6000))), "wide.png")  # 48 Mpx, tiny file
    assert response.status_code == 413 and "pixels" in response.json()["error"]


def test_no_face_and_wrong_requests(client):
    response = post(client, png(Image.new("RGB", (300, 200), (80, 90, 100))), "street.png")
    assert response.status_code == 422 and "not a face crop" in response.json()["error"]
    response = post(client, png(face_crop()), field="photo")
    assert response.status_code == 400 and "'file'" in response.json()["error"]
    response = client.post("/api/predict", json={"file": "x"})
    assert response.status_code == 415 and "multipart" in response.json()["error"]


def test_server_keeps_serving_after_errors(client):
    for payload in (b"junk", b"\0" * (LIMIT + 1), b""):
        assert post(client, payload).status_code >= 400
    assert post(client, png(face_crop(3))).status_code == 200


def test_uploads_stay_in_memory(client, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # any spooled file would land here
    assert post(client, png(face_crop(4).resize((150, 150)))).status_code == 200
    assert list(Path(tmp_path).iterdir()) == []


def test_missing_extra_gives_the_install_command(monkeypatch):
    import builtins

    from facefold import serve
    from facefold.serve import app as serve_app

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(serve_app, "import_module", lambda name: fake_import(name))
    with pytest.raises(RuntimeError, match=r"facefold\[serve\]"):
        serve.require_server_packages()
