"""The FastAPI application: the page, ``/api/info``, ``/api/predict`` and ``/api/enroll``."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations
# (Request is imported lazily inside create_app) at run time.
import threading
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import import_module
from importlib.resources import files
from typing import Any

from facefold.data.images import FILE_FORMATS
from facefold.predict import NoFaceError, Predictor, load_detector
from facefold.serve.gate import Gate, MemoryBudget, Reception
from facefold.serve.hosts import LOCAL_HOSTS, HostCheck
from facefold.serve.limits import MAX_UPLOAD_BYTES, Limits, UploadError
from facefold.serve.upload import MULTIPART_OVERHEAD, decode_upload, decoded_size, read_upload

TOP_K = 3
EXTRA_HINT = "pip install 'facefold[serve]'  (FastAPI, uvicorn, python-multipart)"


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
    # Package data, so that a wheel carries it; read once, as the old string constant was.
    page_html = files("facefold.serve").joinpath("page.html").read_text(encoding="utf-8")
    gate = Gate(limits.workers, limits.queue, limits.wait_timeout)
    # Bodies in memory: as many complete uploads as the gate takes in, whoever holds them.
    reception = Reception(limits.per_client,
                          (limits.workers + limits.queue) * (max_upload_bytes + MULTIPART_OVERHEAD))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        gate.close()

    app = FastAPI(title="facefold", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts, ip_literals=ip_literals)
    # Pictures the workers hold at once: together at most one picture's budget.
    memory = MemoryBudget(limits.max_decoded_bytes, limits.wait_timeout)
    app.state.gate = gate
    app.state.reception = reception
    app.state.memory = memory
    model_lock = threading.Lock()  # one photo at a time through the model: it uses every core

    @contextmanager
    def decoded(data: bytes, filename: str) -> Iterator[Any]:
        """The decoded photo, its memory held in the budget from before decoding until it
        is closed."""
        with memory.hold(decoded_size(data)):
            photo = decode_upload(data, filename, limits)
            try:
                yield photo
            finally:
                # Free the pixels now: an error's traceback still refers to the photo, and
                # such reference cycles wait for Python's garbage collector, which counts
                # objects, not megabytes.
                photo.close()

    def process(data: bytes, filename: str) -> dict[str, Any]:
        with decoded(data, filename) as photo, model_lock:
            return face_results(predictor, photo, top_k)

    def enroll(data: bytes, filename: str, name: str) -> dict[str, Any]:
        with decoded(data, filename) as photo:
            with model_lock:
                try:
                    crop = predictor.face_crops(photo)[0][1]  # the largest face
                    count = predictor.enroll(name, [crop])
                except NoFaceError as err:
                    raise UploadError(422, f"{filename}: {err}") from err
                except ValueError as err:  # a bad name, a trained person, no centroids
                    raise UploadError(400, str(err)) from err
            return {"name": name, "pictures": count, "people": predictor.people}

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, err: UploadError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html

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
            "formats": list(FILE_FORMATS.values()),
            "max_pixels": limits.max_pixels,
            "max_decoded_bytes": limits.max_decoded_bytes,
            "min_side": limits.min_side,
            "workers": limits.workers,
            "queue": limits.queue,
            "per_client": limits.per_client,
            "max_parts": limits.max_parts,
        }

    async def handle(request: Request, job: Any, *args: Any) -> dict[str, Any]:
        """Receive the upload (holding no place at the gate), then run ``job`` on it."""
        with reception.enter(request.client.host if request.client else "") as charge:
            filename, data = await read_upload(request, max_upload_bytes, limits.body_timeout,
                                               limits=limits, charge=charge)
            with gate.admit():
                return await gate.run(job, data, filename, *args)

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        return await handle(request, process)

    if allow_enroll:
        @app.post("/api/enroll")
        async def enroll_photo(request: Request) -> dict[str, Any]:
            return await handle(request, enroll, request.query_params.get("name", ""))

    return app
