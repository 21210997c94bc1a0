"""Uploads: the multipart body read in memory within its limits, then decoded as a photo."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable
from typing import Any

from facefold.data.images import (
    FILE_FORMATS,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    decode_bytes,
    load_rgb,
)
from facefold.serve.limits import Limits, UploadError

# Room for the multipart boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# RFC 2046 allows boundaries of 1 to 70 characters.
MAX_BOUNDARY = 70
MAX_NAME = 100  # characters of an upload's file name shown in messages


class MultipartReader:
    """A multipart body parsed as it arrives, keeping only the part named ``field``.

    :meth:`feed` takes the body chunk by chunk and :meth:`finish` returns
    ``(filename, bytes)``. Each chunk is parsed at once (python-multipart, a
    few milliseconds for 64 KB whatever it holds), so the event loop never
    parses a whole body in one go, and a body of more than ``max_parts`` parts
    is refused (413) at the part that crosses the limit, not after the last of
    150,000. Raises :class:`UploadError` (400) for a boundary that is missing or
    longer than RFC 2046's 70 characters, a body that cannot be parsed or one
    without that part.
    """

    def __init__(self, content_type: str, field: str = "file",
                 max_parts: int = Limits.max_parts) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._options = parse_options_header
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise UploadError(400, "the multipart Content-Type has no boundary")
        if len(boundary) > MAX_BOUNDARY:
            raise UploadError(400, f"the multipart boundary has {len(boundary)} characters; "
                                   f"at most {MAX_BOUNDARY} are allowed (RFC 2046)")
        self.field = field.encode()
        self.max_parts = max_parts
        self.parts = 0
        self._header: dict[str, bytes] = {}
        self._headers: dict[bytes, bytes] = {}
        self._found: tuple[str, bytearray] | None = None
        self._data: bytearray | None = None  # the data of the current part when it is field's
        callbacks = {
            "on_part_begin": self._begin, "on_header_field": self._on_field,
            "on_header_value": self._on_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._on_data,
        }
        self._parser = self._guard(lambda: MultipartParser(boundary, callbacks))

    def feed(self, chunk: bytes) -> None:
        """Parse the next ``chunk`` of the body."""
        self._guard(lambda: self._parser.write(chunk))

    def finish(self) -> tuple[str, bytes]:
        """``(filename, bytes)`` of the ``field`` part once the whole body was fed."""
        self._guard(self._parser.finalize)
        if self._found is None:
            field = self.field.decode()
            raise UploadError(400, f"the form has no '{field}' field: send the photo as '{field}'")
        return self._found[0], bytes(self._found[1])

    def _guard(self, step: Any) -> Any:
        from python_multipart.exceptions import FormParserError

        try:  # the parser checks the boundary when built: build it inside here too
            return step()
        except (FormParserError, ValueError) as err:
            raise UploadError(400, f"malformed multipart body ({err})") from err

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise UploadError(413, f"the multipart body has more than {self.max_parts} parts; "
                                   "send the photo alone in the field 'file'")
        self._headers = {}
        self._data = None

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._header["field"] = self._header.get("field", b"") + data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._header["value"] = self._header.get("value", b"") + data[start:end]

    def _header_end(self) -> None:
        name = self._header.pop("field", b"").lower()
        self._headers[name] = self._header.pop("value", b"")

    def _headers_finished(self) -> None:
        _, disposition = self._options(self._headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == self.field and self._found is None:
            self._data = bytearray()  # the first part of that name is the photo
            self._found = display_name(disposition.get(b"filename", b"")), self._data

    def _on_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            self._data += data[start:end]


def parse_multipart_file(body: bytes, content_type: str, field: str = "file",
                         max_parts: int = Limits.max_parts) -> tuple[str, bytes]:
    """``(filename, bytes)`` of the multipart part named ``field`` of a whole ``body``
    (:class:`MultipartReader` fed at once)."""
    reader = MultipartReader(content_type, field, max_parts)
    reader.feed(body)
    return reader.finish()


def display_name(filename: bytes, limit: int = MAX_NAME) -> str:
    """An upload's file name as messages show it: its last path part, printable, at most
    ``limit`` characters ("upload" when nothing is left). It names the file in errors only;
    nothing is ever written under it."""
    name = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    return (name[: limit - 1] + "…" if len(name) > limit else name) or "upload"


def decode_upload(data: bytes, filename: str, limits: Limits | None = None) -> Any:
    """The uploaded bytes as an RGB picture, or :class:`UploadError` with the right status.

    Only :data:`~facefold.data.images.FILE_FORMATS` are opened (those files may be in); size and
    memory are checked from the header first (see :class:`Limits`).
    """
    limits = limits or Limits()
    if not data:
        raise UploadError(400, f"{filename}: the file is empty")
    try:
        return load_rgb(data, filename, limits.max_pixels, formats=FILE_FORMATS,
                        max_bytes=limits.max_decoded_bytes, min_side=limits.min_side)
    except ImageTooLargeError as err:
        raise UploadError(413, str(err)) from err
    except ImageTooSmallError as err:
        raise UploadError(422, str(err)) from err
    except NotAnImageError as err:
        raise UploadError(415, str(err)) from err
    except ImageError as err:
        raise UploadError(400, str(err)) from err



def decoded_size(data: bytes) -> int:
    """The bytes :func:`decode_upload` will hold to decode ``data``, from its header alone
    (:func:`~facefold.data.images.decode_bytes`); 0 when it is no picture that opens (then
    :func:`decode_upload` says why without decoding anything)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # a decompression bomb: decode_upload refuses it
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=list(FILE_FORMATS)) as img:
                return decode_bytes(img)
    except Exception:  # whatever a plugin trips over on hostile data: decode_upload says
        return 0


async def read_upload(request: Any, limit: int, timeout: float = Limits.body_timeout, *,
                      limits: Limits | None = None,
                      charge: Callable[[int], None] | None = None) -> tuple[str, bytes]:
    """Receive a multipart upload, parsing it as it arrives (:class:`MultipartReader`).

    Refused with 413 as soon as it exceeds ``limit`` bytes or ``limits.max_parts`` parts,
    and with 408 when the whole body takes longer than ``timeout`` seconds or, after the
    first ``limits.rate_grace`` seconds, arrives at less than ``limits.min_rate`` bytes a
    second on average. ``charge(n)`` is called for every ``n`` bytes received (the server's
    budget of bodies in memory; it raises to refuse).
    """
    limits = limits or Limits()
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, "send the photo as multipart/form-data in the field 'file'")
    too_large = UploadError(413, f"upload larger than the {limit / 2**20:g} MB limit")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise too_large
    reader = MultipartReader(content_type, max_parts=limits.max_parts)
    loop = asyncio.get_running_loop()
    started = loop.time()

    def deadline(received: int) -> float:
        """When the body is late: past ``timeout``, or behind ``min_rate`` after the grace."""
        return started + min(timeout, max(limits.rate_grace, received / limits.min_rate))

    received = 0
    try:
        async with asyncio.timeout(deadline(0)) as window:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + MULTIPART_OVERHEAD:
                    raise too_large
                if charge is not None:
                    charge(len(chunk))
                reader.feed(chunk)
                window.reschedule(deadline(received))
    except TimeoutError as err:
        if loop.time() - started >= timeout:
            raise UploadError(408, f"the upload was not received within {timeout:g} s") from err
        raise UploadError(408, f"the upload arrived at less than {limits.min_rate:,.0f} "
                               f"bytes/s ({received:,} bytes in {loop.time() - started:.1f} s)"
                          ) from err
    filename, data = reader.finish()
    if len(data) > limit:
        raise too_large
    return filename, data
