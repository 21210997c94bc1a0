"""What one server takes on at once, and the refusal every limit raises (:class:`UploadError`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from facefold.data.images import MIN_PICTURE_SIDE

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 160 MB (Pillow keeps RGB in 4 bytes)


@dataclass(frozen=True)
class Limits:
    """What one server takes on at once, and how long it waits; see the module docstring.

    Bodies are received before they take a place (a slow client holds no worker
    and no place in the queue); the bytes of all bodies in memory at once, being
    received or waiting, are at most ``workers + queue`` uploads' worth (503 beyond).
    Memory is bounded by ``max_decoded_bytes`` of pictures held by all workers
    together (:class:`~facefold.serve.gate.MemoryBudget`), one face detection at a
    time (about 300 MB for MTCNN at 1280 px), and those bodies: ``python -m
    facefold.serve_bench`` measures it (docs/deployment.md, "serve").
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
    queue: int = 8  # received uploads admitted beyond the workers, waiting for one
    wait_timeout: float = 30.0  # seconds an admitted upload waits for a worker, then 503
    body_timeout: float = 30.0  # seconds to receive a whole body, then 408
    # A body must average this many bytes a second once `rate_grace` seconds have passed
    # (else 408): a client trickling a byte a second is cut after seconds, not 30 s.
    min_rate: float = 8192.0
    rate_grace: float = 5.0
    # Uploads one client address has in progress at once (being received or worked on;
    # 429 beyond): one client cannot take every connection. Behind a proxy all clients
    # share its address, so raise it there.
    per_client: int = 4
    max_parts: int = 8  # parts of one multipart body (413 beyond): the form has one
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

