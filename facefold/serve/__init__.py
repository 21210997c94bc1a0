"""``facefold serve MODEL``: a web page and a JSON API that name the faces in an uploaded photo.

- ``GET /``: a page (plain HTML + JS, nothing from the network) to upload a
  photo; it shows the photo with a box on every face, the most likely person
  inside it (the next two on hover) and the three most likely per face in a list.
- ``POST /api/predict`` with a multipart field ``file``: ``{"width", "height",
  "whole_image", "faces": [{"box": [x, y, w, h], "name", "known", "top":
  [{"name", "probability" or "similarity"}], "top_kind", "score", "score_name",
  "threshold"}]}``, faces
  largest first, boxes in the photo's pixels.
- ``GET /api/info``: the model's people, image size, threshold, limits.

Faces are found with ``facefold.faces.detect`` when it is installed; without
it, or when it finds none, a nearly square picture of at most 512 px is taken
as one face crop (``whole_image: true``, the box is the whole picture) — the
rule of :meth:`facefold.predict.Predictor.face_crops`.

Every upload is treated as hostile. Limits and errors (JSON ``{"error":
message}``; the server keeps serving):

- 413: an upload larger than ``max_upload_bytes`` (default 10 MB), a multipart body of
  more than 8 parts (refused at the ninth: the body is parsed as it arrives, a chunk at a
  time), a picture of more than 40 megapixels, or one whose decoding would take more than
  384 MB (16-bit, float and transparent pictures count what they take in memory), all
  checked before any pixel is decoded;
- 415: a request that is not multipart, or a file that is not JPEG, PNG,
  WebP, BMP, GIF or TIFF (no other Pillow plugin ever parses an upload);
- 400: a missing ``file`` field, a malformed body, a corrupt or truncated image;
- 408: a body not received within 30 s, or arriving at less than 8 KB/s on average once
  5 s have passed;
- 422: no face found, or a picture under 20 px on its shorter side;
- 403: a ``Host`` or ``Origin`` header not on the allow-list (default: the
  bound address and localhost names), which stops DNS rebinding: a page on
  another site cannot reach the API through a name that resolves to 127.0.0.1;
- 429 with ``Retry-After``: a client address with 4 uploads already in progress;
- 503 with ``Retry-After``: more uploads than the server takes at once. A body is received
  before it takes a place, so a slow client holds only its own connection; then at most 2
  photos are decoded or recognized at a time (:class:`Limits`), at most 8 more wait, and
  the rest are turned away rather than held in memory. The bodies in memory are at most 10
  uploads' worth, and the decoded pictures of both workers together at most 384 MB (a
  second large picture waits for the first).

Connections that send no complete request line and headers within 10 s are
closed. Uploads are processed in memory: nothing is written to disk. The
server binds to 127.0.0.1 unless told otherwise. FastAPI, uvicorn and
python-multipart come with the ``serve`` extra: ``pip install 'facefold[serve]'``.

The package, one idea a module: :mod:`~facefold.serve.limits` (what a server takes on, and
:class:`UploadError`), :mod:`~facefold.serve.upload` (the multipart body and the decoded photo),
:mod:`~facefold.serve.gate` (reception, admission and the memory of pictures),
:mod:`~facefold.serve.hosts` (``Host`` and ``Origin``), :mod:`~facefold.serve.app` (the
routes; the page is ``page.html`` beside them) and
:mod:`~facefold.serve.server` (uvicorn and :func:`serve`).
"""

from facefold.serve.app import create_app, face_results, require_server_packages
from facefold.serve.gate import Gate, MemoryBudget, Reception
from facefold.serve.hosts import HostCheck, allowed_hosts_for
from facefold.serve.limits import Limits, UploadError
from facefold.serve.server import make_server, serve
from facefold.serve.upload import (
    MultipartReader,
    decode_upload,
    parse_multipart_file,
    read_upload,
)

__all__ = [
    "Gate", "HostCheck", "Limits", "MemoryBudget", "MultipartReader", "Reception", "UploadError",
    "allowed_hosts_for", "create_app", "decode_upload", "face_results", "make_server",
    "parse_multipart_file", "read_upload", "require_server_packages", "serve",
]
