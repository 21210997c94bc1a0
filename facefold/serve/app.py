"""The FastAPI application: the page, ``/api/info``, ``/api/predict`` and ``/api/enroll``."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations
# (Request is imported lazily inside create_app) at run time.
import threading
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from importlib import import_module
from importlib.resources import files
from typing import Any

from facefold.data.images import FILE_FORMATS
from facefold.predict import NoFaceError, Predictor, load_detector
from facefold.serve.gate import Gate
from facefold.serve.hosts import LOCAL_HOSTS, HostCheck
from facefold.serve.limits import MAX_UPLOAD_BYTES, Limits, UploadError
from facefold.serve.upload import decode_upload, read_upload

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
