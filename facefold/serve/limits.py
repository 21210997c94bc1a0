"""What one server takes on at once, and the refusal every limit raises (:class:`UploadError`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from facefold.data.images import MIN_PICTURE_SIDE

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 160 MB (Pillow keeps RGB in 4 bytes)


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

