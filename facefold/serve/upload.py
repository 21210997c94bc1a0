"""Uploads: the multipart body read in memory within its limits, then decoded as a photo."""

from __future__ import annotations

import asyncio
from typing import Any

from facefold.data.images import (
    FILE_FORMATS,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    load_rgb,
)
from facefold.serve.limits import Limits, UploadError

# Room for the multipart boundaries and headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
# RFC 2046 allows boundaries of 1 to 70 characters.
MAX_BOUNDARY = 70
MAX_NAME = 100  # characters of an upload's file name shown in messages


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

