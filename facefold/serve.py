"""``facefold serve MODEL``: a web page and a JSON API that name the faces in an uploaded photo.

- ``GET /``: a page (plain HTML + JS, nothing from the network) to upload a
  photo; it shows the photo with a box on every face and the three most likely
  people under each box.
- ``POST /api/predict`` with a multipart field ``file``: ``{"width", "height",
  "whole_image", "faces": [{"box": [x, y, w, h], "name", "known", "top":
  [{"name", "probability"}], "score", "score_name", "threshold"}]}``, faces
  largest first, boxes in the photo's pixels.
- ``GET /api/info``: the model's people, image size, threshold, limits.

Faces are found with ``facefold.faces.detect`` when it is installed; without
it, or when it finds none, a nearly square picture of at most 512 px is taken
as one face crop (``whole_image: true``, the box is the whole picture) — the
rule of :meth:`facefold.predict.Predictor.face_crops`.

Limits and errors (JSON ``{"error": message}``; the server keeps serving):
413 upload larger than ``max_upload_bytes`` (default 10 MB) or an image of
more than 40 megapixels; 415 a request that is not multipart or a file that
is no image; 400 a missing ``file`` field, a malformed body or a truncated or
corrupt image; 422 no face found. Uploads are processed in memory: nothing is
written to disk. The server binds to 127.0.0.1 unless told otherwise.
FastAPI, uvicorn and python-multipart come with the ``serve`` extra:
``pip install 'facefold[serve]'``.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations
# (Request is imported lazily inside create_app) at run time.
import threading
from importlib import import_module
from pathlib import Path
from typing import Any

from facefold.data.images import ImageError, ImageTooLargeError, NotAnImageError, load_rgb
from facefold.predict import NoFaceError, Predictor, load_detector

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB
TOP_K = 3
# Room for the multipart boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
EXTRA_HINT = "pip install 'facefold[serve]'  (FastAPI, uvicorn, python-multipart)"


class UploadError(Exception):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def require_server_packages() -> None:
    """Raise ``RuntimeError`` with the install command when the ``serve`` extra is missing."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RuntimeError(f"the web server needs {', '.join(missing)}: {EXTRA_HINT}")


def parse_multipart_file(body: bytes, content_type: str, field: str = "file") -> tuple[str, bytes]:
    """``(filename, bytes)`` of the multipart part named ``field``, parsed in memory.

    Raises :class:`UploadError` (400) for a body without that part or that
    cannot be parsed.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "the multipart Content-Type has no boundary")
    parts: list[dict[str, Any]] = []
    header: dict[str, bytes] = {}

    def begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_field(data: bytes, start: int, end: int) -> None:
        header["field"] = header.get("field", b"") + data[start:end]

    def on_value(data: bytes, start: int, end: int) -> None:
        header["value"] = header.get("value", b"") + data[start:end]

    def header_end() -> None:
        parts[-1]["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    def on_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    parser = MultipartParser(boundary, {
        "on_part_begin": begin, "on_header_field": on_field, "on_header_value": on_value,
        "on_header_end": header_end, "on_part_data": on_data,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        raise UploadError(400, f"malformed multipart body ({err})") from err
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode():
            filename = disposition.get(b"filename", b"upload").decode("utf-8", "replace")
            return filename or "upload", bytes(part["data"])
    raise UploadError(400, f"the form has no '{field}' field: send the photo as '{field}'")


def decode_upload(data: bytes, filename: str) -> Any:
    """The uploaded bytes as an RGB picture, or :class:`UploadError` with the right status."""
    if not data:
        raise UploadError(400, f"{filename}: the file is empty")
    try:
        return load_rgb(data, filename, MAX_PIXELS)
    except ImageTooLargeError as err:
        raise UploadError(413, str(err)) from err
    except NotAnImageError as err:
        raise UploadError(415, f"{err} (send a JPEG, PNG, WebP, BMP, GIF or TIFF photo)") from err
    except ImageError as err:
        raise UploadError(400, str(err)) from err


def face_results(predictor: Predictor, photo: Any, top_k: int = TOP_K) -> dict[str, Any]:
    """The JSON answer for one decoded photo (see the module docstring)."""
    try:
        faces = predictor.recognize_photo(photo, top_k=top_k, detect=True)
    except NoFaceError as err:
        raise UploadError(422, str(err)) from err
    whole = [0.0, 0.0, float(photo.width), float(photo.height)]
    rows = []
    for face in faces:
        row = face.to_dict()
        row["box"] = row["box"] or whole
        rows.append(row)
    return {
        "width": photo.width,
        "height": photo.height,
        "whole_image": all(face.box is None for face in faces),
        "faces": rows,
    }


def create_app(predictor: Predictor, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               top_k: int = TOP_K) -> Any:
    """The FastAPI application serving ``predictor`` (see the module docstring)."""
    require_server_packages()
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="facefold", docs_url=None, redoc_url=None)
    lock = threading.Lock()  # one photo at a time: the model already uses every core

    def recognize(photo: Any) -> dict[str, Any]:
        with lock:
            return face_results(predictor, photo, top_k)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, err: UploadError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "people": predictor.labels,
            "image_size": predictor.info.image_size,
            "model": predictor.info.kind,
            "threshold": predictor.info.threshold,
            "detector": load_detector() is not None,
            "max_upload_bytes": max_upload_bytes,
        }

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        filename, data = await read_upload(request, max_upload_bytes)
        photo = await run_in_threadpool(decode_upload, data, filename)
        return await run_in_threadpool(recognize, photo)

    return app


async def read_upload(request: Any, limit: int) -> tuple[str, bytes]:
    """Read a multipart upload into memory, refusing it (413) as soon as it exceeds ``limit``."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, "send the photo as multipart/form-data in the field 'file'")
    too_large = UploadError(413, f"upload larger than the {limit / 2**20:g} MB limit")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + MULTIPART_OVERHEAD:
            raise too_large
    filename, data = parse_multipart_file(bytes(body), content_type)
    if len(data) > limit:
        raise too_large
    return filename, data


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = MAX_UPLOAD_BYTES / 2**20) -> None:
    """Load ``model`` once and serve the page and API until interrupted."""
    require_server_packages()
    import uvicorn

    predictor = Predictor.load(model)
    app = create_app(predictor, int(max_upload_mb * 2**20))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"facefold: serving on {host}: other machines can reach this page")
    print(f"facefold: {len(predictor.labels)} people; open http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>facefold — who is in this photo?</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 62rem;
         padding: 0 1rem; color: #1f2328; background: #fafafa; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; }
  .hint { color: #57606a; margin-top: 0; }
  #status { min-height: 1.5em; font-weight: 500; }
  #status.error { color: #b42318; }
  #stage { position: relative; display: inline-block; margin: 1rem 0 5rem; }
  #photo { display: block; max-width: 100%; max-height: 70vh; border-radius: 4px; }
  .box { position: absolute; box-sizing: border-box; border: 3px solid #1a7f37; }
  .box.unknown { border-color: #cf222e; border-style: dashed; }
  .label { position: absolute; left: -3px; top: calc(100% + 2px); z-index: 1;
           background: rgba(255, 255, 255, .95); border: 1px solid #8c959f;
           border-radius: 3px; padding: 2px 6px; font-size: .85rem; line-height: 1.35;
           white-space: nowrap; box-shadow: 0 1px 3px rgba(0, 0, 0, .25); }
  .label .name { font-weight: 400; }
  .label .first .name { font-weight: 700; }
  .badge { position: absolute; left: -3px; bottom: 100%; background: #1a7f37; color: #fff;
           font-size: .75rem; font-weight: 600; padding: 0 5px; border-radius: 3px 3px 0 0; }
  .unknown .badge { background: #cf222e; }
  .label .prob { color: #57606a; font-variant-numeric: tabular-nums; margin-left: .4em; }
  .label .first { font-size: .95rem; }
  #faces li { margin: .3rem 0; }
</style>
</head>
<body>
<h1>facefold — who is in this photo?</h1>
<p class="hint">Choose a photo: every face found gets a box and the three most likely people.
  The photo stays on this machine.</p>
<form id="form"><input type="file" id="file" name="file" accept="image/*"></form>
<p id="status" role="status"></p>
<div id="stage"><img id="photo" alt=""></div>
<ol id="faces"></ol>
<script>
"use strict";
const fileInput = document.getElementById("file");
const statusLine = document.getElementById("status");
const stage = document.getElementById("stage");
const photo = document.getElementById("photo");
const list = document.getElementById("faces");

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function percent(value, total) { return (100 * value / total) + "%"; }

function clearFaces() {
  stage.querySelectorAll(".box").forEach((el) => el.remove());
  list.replaceChildren();
}

function guessLine(guess, first) {
  const line = document.createElement("div");
  if (first) line.className = "first";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = guess.name;
  const prob = document.createElement("span");
  prob.className = "prob";
  prob.textContent = (100 * guess.probability).toFixed(1) + " %";
  line.append(name, prob);
  return line;
}

function drawFace(face, index, result) {
  const [x, y, w, h] = face.box;
  const box = document.createElement("div");
  box.className = "box" + (face.known ? "" : " unknown");
  box.style.left = percent(x, result.width);
  box.style.top = percent(y, result.height);
  box.style.width = percent(w, result.width);
  box.style.height = percent(h, result.height);
  const label = document.createElement("div");
  label.className = "label";
  if (!face.known) label.append(guessLine({name: "unknown", probability: 0}, true));
  face.top.forEach((guess, i) => label.append(guessLine(guess, face.known && i === 0)));
  if (!face.known) label.firstChild.querySelector(".prob").textContent = "";
  const badge = document.createElement("div");
  badge.className = "badge";
  badge.textContent = String(index + 1);
  box.append(badge, label);
  stage.append(box);
  const item = document.createElement("li");
  item.textContent = (face.known ? face.name : "unknown") + " — " +
    face.top.map((g) => g.name + " " + (100 * g.probability).toFixed(1) + " %").join(", ");
  list.append(item);
}

async function upload(file) {
  clearFaces();
  photo.src = URL.createObjectURL(file);
  setStatus("Looking for faces…", false);
  const form = new FormData();
  form.append("file", file);
  let response, result;
  try {
    response = await fetch("api/predict", {method: "POST", body: form});
    result = await response.json();
  } catch (err) {
    setStatus("The server did not answer: " + err, true);
    return;
  }
  if (!response.ok) {
    setStatus(result.error || ("Error " + response.status), true);
    return;
  }
  result.faces.forEach((face, i) => drawFace(face, i, result));
  const n = result.faces.length;
  setStatus(n + (n === 1 ? " face" : " faces") +
    (result.whole_image ? " (the whole picture taken as one face crop)" : ""), false);
}

fileInput.addEventListener("change", () => {
  if (fileInput.files.length) upload(fileInput.files[0]);
});
</script>
</body>
</html>
"""
