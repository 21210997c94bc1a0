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

Every upload is treated as hostile. Limits and errors (JSON ``{"error":
message}``; the server keeps serving):

- 413: an upload larger than ``max_upload_bytes`` (default 10 MB), a picture
  of more than 40 megapixels, or one whose decoding would take more than
  384 MB (16-bit, float and transparent pictures count what they take in
  memory), all checked before any pixel is decoded;
- 415: a request that is not multipart, or a file that is not JPEG, PNG,
  WebP, BMP, GIF or TIFF (no other Pillow plugin ever parses an upload);
- 400: a missing ``file`` field, a malformed body, a corrupt or truncated image;
- 408: a body not received within 30 s;
- 422: no face found, or a picture under 20 px on its shorter side;
- 403: a ``Host`` or ``Origin`` header not on the allow-list (default: the
  bound address and localhost names), which stops DNS rebinding: a page on
  another site cannot reach the API through a name that resolves to 127.0.0.1;
- 503 with ``Retry-After``: more uploads than the server takes at once. At
  most 2 photos are decoded or recognized at a time (:class:`Limits`), at most
  8 more wait or are being received; the rest are turned away rather than
  held in memory.

Connections that send no complete request line and headers within 10 s are
closed. Uploads are processed in memory: nothing is written to disk. The
server binds to 127.0.0.1 unless told otherwise. FastAPI, uvicorn and
python-multipart come with the ``serve`` extra: ``pip install 'facefold[serve]'``.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations
# (Request is imported lazily inside create_app) at run time.
import asyncio
import ipaddress
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, fields
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from facefold.data.images import (
    MIN_PICTURE_SIDE,
    PHOTO_FORMATS,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    load_rgb,
)
from facefold.predict import NoFaceError, Predictor, load_detector

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 160 MB (Pillow keeps RGB in 4 bytes)
TOP_K = 3
# Room for the multipart boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# RFC 2046 allows boundaries of 1 to 70 characters.
MAX_BOUNDARY = 70
MAX_NAME = 100  # characters of an upload's file name shown in messages
# The names a browser uses for this machine; a Host header naming anything else came
# through some other name (DNS rebinding) and is refused.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
RETRY_AFTER_SECONDS = 5
PILLOW_BLOCK_BYTES = 64 * 2**20  # see _big_pictures_in_big_blocks
EXTRA_HINT = "pip install 'facefold[serve]'  (FastAPI, uvicorn, python-multipart)"


@dataclass(frozen=True)
class Limits:
    """What one server takes on at once, and how long it waits; see the module docstring.

    Memory is bounded by ``workers`` pictures of at most ``max_decoded_bytes``
    each, one face detection at a time (about 300 MB for MTCNN at 1280 px),
    and ``queue`` bodies of at most the upload limit: ``python -m
    facefold.serve_bench`` measures about 0.8 GB above idle under 10 or 20
    uploads at once of 36-megapixel 16-bit PNGs.
    """

    max_pixels: int = MAX_PIXELS
    # 40 megapixels of the widest common kinds (RGBA, float, 16-bit or rotated: up to 8
    # bytes a pixel with the RGB copy) fit; see facefold.data.images.decode_bytes. WebP's
    # decoder keeps two more copies: 24 megapixels of WebP fit.
    max_decoded_bytes: int = 384 * 2**20
    min_side: int = MIN_PICTURE_SIDE
    # Photos decoded or recognized at once. Two cores: one decodes while the other runs the
    # model (recognition itself is one at a time); more would only add memory.
    workers: int = 2
    queue: int = 8  # uploads admitted beyond the workers: being received or waiting
    wait_timeout: float = 30.0  # seconds an admitted upload waits for a worker, then 503
    body_timeout: float = 30.0  # seconds to receive a whole body, then 408
    header_timeout: float = 10.0  # seconds for a request line and headers, then closed
    max_connections: int = 64  # uvicorn answers 503 beyond this many open connections

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (value >= 0 if f.name == "queue" else value > 0):
                allowed = "0 or more" if f.name == "queue" else "positive"
                raise ValueError(f"Limits.{f.name} must be {allowed}, got {value}")


class UploadError(Exception):
    """A request the server refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


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

    Raises :class:`UploadError` (400) for a body without that part, a
    boundary that is missing or longer than RFC 2046's 70 characters, or a
    body that cannot be parsed.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "the multipart Content-Type has no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise UploadError(400, f"the multipart boundary has {len(boundary)} characters; "
                               f"at most {MAX_BOUNDARY} are allowed (RFC 2046)")
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

    try:  # the parser checks the boundary when built: build it inside the try too
        parser = MultipartParser(boundary, {
            "on_part_begin": begin, "on_header_field": on_field, "on_header_value": on_value,
            "on_header_end": header_end, "on_part_data": on_data,
        })
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as err:
        raise UploadError(400, f"malformed multipart body ({err})") from err
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode():
            return display_name(disposition.get(b"filename", b"")), bytes(part["data"])
    raise UploadError(400, f"the form has no '{field}' field: send the photo as '{field}'")


def display_name(filename: bytes, limit: int = MAX_NAME) -> str:
    """An upload's file name as messages show it: its last path part, printable, at most
    ``limit`` characters ("upload" when nothing is left). It names the file in errors only;
    nothing is ever written under it."""
    name = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return (name[: limit - 1] + "…" if len(name) > limit else name) or "upload"


def decode_upload(data: bytes, filename: str, limits: Limits | None = None) -> Any:
    """The uploaded bytes as an RGB picture, or :class:`UploadError` with the right status.

    Only :data:`~facefold.data.images.PHOTO_FORMATS` are opened; size and
    memory are checked from the header first (see :class:`Limits`).
    """
    limits = limits or Limits()
    if not data:
        raise UploadError(400, f"{filename}: the file is empty")
    try:
        return load_rgb(data, filename, limits.max_pixels, formats=PHOTO_FORMATS,
                        max_bytes=limits.max_decoded_bytes, min_side=limits.min_side)
    except ImageTooLargeError as err:
        raise UploadError(413, str(err)) from err
    except ImageTooSmallError as err:
        raise UploadError(422, str(err)) from err
    except NotAnImageError as err:
        raise UploadError(415, str(err)) from err
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


class Gate:
    """Admission control: ``workers`` threads run the jobs, ``queue`` more requests may wait.

    :meth:`admit` is entered for a whole request (also while its body is
    received); when ``workers + queue`` requests are already in, it refuses
    with 503 and ``Retry-After`` at once. :meth:`run` hands a job to the pool
    of ``workers`` threads and refuses with 503 when none has started it
    within ``wait_timeout`` seconds. A pool of its own, not the web server's
    40 threads: each thread that ever decodes a big picture keeps its malloc
    arena's memory, so fewer threads is less memory, not just less parallelism.
    """

    def __init__(self, workers: int, queue: int, wait_timeout: float) -> None:
        self.capacity = workers + queue
        self.wait_timeout = wait_timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="facefold-worker")
        self._lock = threading.Lock()  # admit() may be entered from several event loops
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests in progress: being received, waiting for a worker or being worked on."""
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self.capacity:
                raise _busy(f"{self.capacity} uploads are already in progress")
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    async def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """``job(*args)`` on a worker thread; 503 if it has not started within the wait."""
        future = self._pool.submit(job, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          self.wait_timeout)
        except TimeoutError:
            if future.cancel():  # still queued: give up on it
                raise _busy(f"no worker was free within {self.wait_timeout:g} s") from None
            return await asyncio.wrap_future(future)  # running: let it finish

    def close(self) -> None:
        """Let the worker threads end once their jobs are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _busy(why: str) -> UploadError:
    return UploadError(503, f"the server is busy ({why}): try again in a few seconds",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})


class HostCheck:
    """ASGI middleware refusing (403) requests whose ``Host`` or ``Origin`` is not allowed.

    ``Host`` must name one of ``names`` (or, with ``ip_literals``, be any IP
    address: a browser that sends one was pointed at that address, so it is
    no rebinding). A request without ``Host`` (HTTP/1.0 tools) passes: every
    browser sends one. ``Origin``, when sent, must be the request's own host
    or one of ``names``; ``null`` (a sandboxed or local file page) is refused.
    """

    def __init__(self, app: Any, names: Collection[str], ip_literals: bool = False) -> None:
        self.app = app
        self.names = frozenset(_normal_host(n) for n in names)
        self.ip_literals = ip_literals

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":  # the app has no websocket routes
            problem = self.problem(dict(scope.get("headers") or []))
            if problem:
                body = json.dumps({"error": problem}).encode()
                await send({"type": "http.response.start", "status": 403, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def problem(self, headers: dict[bytes, bytes]) -> str | None:
        """Why these request headers are refused, or None."""
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self._allowed(_hostname(host)):
            return (f"Host {host!r} is not allowed: open the page through "
                    f"{', '.join(sorted(self.names))}")
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), host):
            return f"requests from the page at {origin.decode('latin-1')!r} are not allowed"
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        """Same origin as ``host``, or a page on one of the allowed names."""
        try:
            parts = urlsplit(origin)
            name = parts.hostname or ""
        except ValueError:  # "http://[oops", a port out of range …
            return False
        if host and parts.netloc.lower() == host.lower():
            return True
        return bool(name) and _normal_host(name) in self.names

    def _allowed(self, name: str) -> bool:
        if name in self.names:
            return True
        if self.ip_literals:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return False
            return True
        return False


def _normal_host(name: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets: how names are compared."""
    return name.strip().lower().rstrip(".").strip("[]")


def _hostname(host: str) -> str:
    """The name in a ``Host`` header value: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    host = host.strip()
    if host.startswith("["):
        return _normal_host(host[1:host.find("]")] if "]" in host else host)
    return _normal_host(host.rsplit(":", 1)[0] if host.count(":") == 1 else host)


def allowed_hosts_for(host: str) -> tuple[frozenset[str], bool]:
    """``(names, ip_literals)`` that :class:`HostCheck` allows for a server bound to ``host``.

    The bound name and the localhost names; for a wildcard address (0.0.0.0,
    ::) also this machine's host names and any IP address.
    """
    names = set(LOCAL_HOSTS) | {_normal_host(host)}
    wildcard = host in WILDCARD_HOSTS
    if wildcard:
        names |= {_normal_host(socket.gethostname()), _normal_host(socket.getfqdn())}
    return frozenset(names - {""}), wildcard


def create_app(predictor: Predictor, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               top_k: int = TOP_K, limits: Limits | None = None,
               allowed_hosts: Collection[str] | None = LOCAL_HOSTS,
               ip_literals: bool = False, allow_enroll: bool = False) -> Any:
    """The FastAPI application serving ``predictor`` (see the module docstring).

    ``allowed_hosts`` are the names a browser may reach the server by
    (:class:`HostCheck`); None turns the check off (e.g. behind a proxy that
    does it). ``allow_enroll`` adds ``POST /api/enroll?name=NAME`` (and its form on the
    page): the largest face of the uploaded photo joins that person in the model folder's
    gallery, without retraining (it writes to the model folder: off by default).
    """
    require_server_packages()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    limits = limits or Limits()
    gate = Gate(limits.workers, limits.queue, limits.wait_timeout)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.close()

    app = FastAPI(title="facefold", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts, ip_literals=ip_literals)
    app.state.gate = gate
    model_lock = threading.Lock()  # one photo at a time through the model: it uses every core

    def process(data: bytes, filename: str) -> dict[str, Any]:
        photo = decode_upload(data, filename, limits)
        try:
            with model_lock:
                return face_results(predictor, photo, top_k)
        finally:
            # Free the pixels now: an error's traceback still refers to the photo, and
            # such reference cycles wait for Python's garbage collector, which counts
            # objects, not megabytes.
            photo.close()

    def enroll(data: bytes, filename: str, name: str) -> dict[str, Any]:
        photo = decode_upload(data, filename, limits)
        try:
            with model_lock:
                try:
                    crop = predictor.face_crops(photo)[0][1]  # the largest face
                    count = predictor.enroll(name, [crop])
                except NoFaceError as err:
                    raise UploadError(422, f"{filename}: {err}") from err
                except ValueError as err:  # a bad name, a trained person, no centroids
                    raise UploadError(400, str(err)) from err
            return {"name": name, "pictures": count, "people": predictor.people}
        finally:
            photo.close()

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, err: UploadError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "people": predictor.people,
            "enroll": allow_enroll,
            "image_size": predictor.info.image_size,
            "model": predictor.info.kind,
            "threshold": predictor.info.threshold,
            "detector": load_detector() is not None,
            "max_upload_bytes": max_upload_bytes,
            "formats": list(PHOTO_FORMATS.values()),
            "max_pixels": limits.max_pixels,
            "max_decoded_bytes": limits.max_decoded_bytes,
            "min_side": limits.min_side,
            "workers": limits.workers,
            "queue": limits.queue,
        }

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        with gate.admit():
            filename, data = await read_upload(request, max_upload_bytes, limits.body_timeout)
            return await gate.run(process, data, filename)

    if allow_enroll:
        @app.post("/api/enroll")
        async def enroll_photo(request: Request) -> dict[str, Any]:
            name = request.query_params.get("name", "")
            with gate.admit():
                filename, data = await read_upload(request, max_upload_bytes,
                                                   limits.body_timeout)
                return await gate.run(enroll, data, filename, name)

    return app


async def read_upload(request: Any, limit: int,
                      timeout: float = Limits.body_timeout) -> tuple[str, bytes]:
    """Read a multipart upload into memory, refusing it (413) as soon as it exceeds ``limit``
    and (408) when the whole body takes longer than ``timeout`` seconds."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, "send the photo as multipart/form-data in the field 'file'")
    too_large = UploadError(413, f"upload larger than the {limit / 2**20:g} MB limit")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit + MULTIPART_OVERHEAD:
                    raise too_large
    except TimeoutError as err:
        raise UploadError(408, f"the upload was not received within {timeout:g} s") from err
    filename, data = parse_multipart_file(bytes(body), content_type)
    if len(data) > limit:
        raise too_large
    return filename, data


def header_timeout_protocol(timeout: float) -> Any:
    """uvicorn's HTTP/1.1 protocol, closing connections that send no request for ``timeout`` s.

    uvicorn arms its keep-alive timer only after a response and stops it at
    the first byte received, so a client that connects and sends nothing (or
    a header a byte at a time) would hold its socket forever. Here a timer is
    armed when the connection opens and after every response; if no new
    request has started by then, the connection is closed. Returns "h11" when
    uvicorn's h11 protocol is not where this expects it (the server then runs
    without the timer).
    """
    try:
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:
        return "h11"

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            self.loop.call_later(timeout, self._expire, self.cycle)

        def _expire(self, cycle: Any) -> None:
            idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
            if idle and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000,
                limits: Limits | None = None) -> Any:
    """A ``uvicorn.Server`` for ``app`` with the connection limits of ``limits``."""
    import uvicorn

    limits = limits or Limits()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning",
        http=header_timeout_protocol(limits.header_timeout),
        limit_concurrency=limits.max_connections, timeout_keep_alive=5,
    )
    return uvicorn.Server(config)


def _big_pictures_in_big_blocks() -> None:
    """Have Pillow allocate pictures in blocks of 64 MB rather than 16 MB, in this process.

    malloc maps blocks that large straight from the system and gives them back
    when freed; 16 MB blocks stay in the heap of whichever thread decoded them
    (measured after bursts of 36-megapixel uploads: 940 MB above idle still
    resident with 16 MB blocks, 570 MB with 64 MB ones; peaks 960 and 860 MB).
    Small pictures are unaffected: a block is never larger than the picture.
    """
    from PIL import Image

    set_block_size = getattr(Image.core, "set_block_size", None)
    if set_block_size is not None:
        set_block_size(PILLOW_BLOCK_BYTES)


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = MAX_UPLOAD_BYTES / 2**20, limits: Limits | None = None,
          allowed_hosts: Collection[str] = (), allow_enroll: bool = False) -> None:
    """Load ``model`` once and serve the page and API until interrupted.

    Browsers may reach it by ``host``, the localhost names and ``allowed_hosts``
    (for a wildcard ``host``, also by this machine's names and IP addresses).
    """
    require_server_packages()
    _big_pictures_in_big_blocks()
    predictor = Predictor.load(model)
    names, ip_literals = allowed_hosts_for(host)
    app = create_app(predictor, int(max_upload_mb * 2**20), limits=limits,
                     allowed_hosts=names | {_normal_host(n) for n in allowed_hosts},
                     ip_literals=ip_literals, allow_enroll=allow_enroll)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"facefold: serving on {host}: other machines can reach this page")
    print(f"facefold: {len(predictor.labels)} people; open http://{host}:{port}/")
    make_server(app, host, port, limits).run()


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
<form id="enroll" hidden><fieldset><legend>Add a person (no retraining)</legend>
  <label>Name <input type="text" id="enroll-name" required></label>
  <label>Photo <input type="file" id="enroll-file" accept="image/*" required></label>
  <button type="submit">Enroll</button> <span id="enroll-status"></span></fieldset></form>
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

const enrollForm = document.getElementById("enroll");
fetch("api/info").then((r) => r.json()).then((info) => { enrollForm.hidden = !info.enroll; });
enrollForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = document.getElementById("enroll-name").value;
  const form = new FormData();
  form.append("file", document.getElementById("enroll-file").files[0]);
  const line = document.getElementById("enroll-status");
  const response = await fetch("api/enroll?name=" + encodeURIComponent(name),
                               {method: "POST", body: form});
  const result = await response.json();
  line.textContent = response.ok ? name + ": " + result.pictures + " photo(s)" : result.error;
});
</script>
</body>
</html>
"""
