"""The labeling page and its JSON API (FastAPI), over one :class:`~facefold.label.session.Session`.

- ``GET /``: the page (``label.html``, package data; plain HTML + JS, nothing from the network).
- ``GET /api/state``: ``{"groups": [{"id", "proposal": {"name", "similarity", "confident",
  "source"} or null, "faces": [{"id", "photo", "similarity"}]}], "people": [{"name",
  "faces", "existing", "face_ids"}], "rejected": [{"id", "photo", "reason"}], "decisions",
  "can_undo", "out"}``; groups and their faces most certain first.
- ``GET /api/suspects``: ``{"suspects": [{"id", "photo", "given", "suggested", "score",
  "kind", "detail"}], "labeled", "people"}``: the named faces whose name looks wrong, most
  suspect first (:meth:`~facefold.label.session.Session.suspects`); 503 with ``{"error"}``
  naming the pip command when the ``audit`` extra is missing. Fixing one is a decision like
  any other: ``name`` (move it to the suggested person), ``reject`` or ``confirm`` (keep).
- ``GET /api/crop/{face_id}``: a face's aligned crop (PNG).
- ``POST /api/decide`` with a JSON decision (``{"action", "faces", "name", "to", "reason",
  "request"}``, see :mod:`facefold.label.decisions`): on disk before the answer, which is the
  new state; 400 with ``{"error"}`` for a decision that does not fit, 415 for a body that is
  not JSON.

Host and Origin are checked as by ``facefold serve`` (:class:`facefold.serve.hosts.HostCheck`),
so a page on another site cannot send decisions through DNS rebinding.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.
import json
import re
from collections.abc import Collection
from importlib.resources import files
from typing import Any

from facefold.label.session import Session
from facefold.serve.app import require_server_packages
from facefold.serve.hosts import LOCAL_HOSTS, HostCheck

MAX_BODY_BYTES = 1_000_000  # a decision names at most a few thousand faces
_FACE_ID = re.compile(r"[0-9a-f]{16}-[0-9]+")


def create_label_app(session: Session, allowed_hosts: Collection[str] | None = LOCAL_HOSTS,
                     ip_literals: bool = False) -> Any:
    """The FastAPI application of ``session`` (see the module docstring)."""
    require_server_packages()
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    page_html = files("facefold.label").joinpath("label.html").read_text(encoding="utf-8")
    app = FastAPI(title="facefold label", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, names=allowed_hosts, ip_literals=ip_literals)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        with session.lock:
            return session.view()

    @app.get("/api/suspects")
    def suspects() -> Any:
        try:
            with session.lock:
                return session.suspects()
        except ModuleNotFoundError as err:
            return error(503, str(err))

    @app.get("/api/crop/{face_id}")
    def crop(face_id: str) -> Any:
        if not _FACE_ID.fullmatch(face_id) or face_id not in session.known:
            return error(404, f"no face {face_id!r} in this session")
        return FileResponse(session.store.crop_path(face_id), media_type="image/png",
                            headers={"Cache-Control": "max-age=86400"})

    @app.post("/api/decide")
    async def decide(request: Request) -> Any:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return error(415, f"a decision is sent as application/json, not {kind or 'nothing'}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error(413, f"a decision of {len(body)} bytes is too large")
        try:
            decision = json.loads(body)
        except ValueError as err:
            return error(400, f"the body is not JSON: {err}")
        if not isinstance(decision, dict):
            return error(400, "a decision is a JSON object")
        try:
            return session.decide(decision)  # fsync'd: quick; one decision at a time anyway
        except ValueError as err:
            return error(400, str(err))

    return app
