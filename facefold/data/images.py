"""Image file helpers shared by the whole project.

Everything that opens a picture from disk goes through :func:`load_rgb`, so
every part of facefold (dataset builder, predict, the web demo) agrees on what
counts as a readable image and how it becomes an 8-bit RGB array.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

# Suffixes worth offering when a user points at a folder of pictures. The
# dataset builder does not rely on them: it tries to open every file.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    | {".pgm", ".ppm", ".pbm", ".pnm"}  # the Netpbm family (ORL ships as PGM)
)

# Modes holding more than 8 bits per sample (16-bit PGM/PNG, 32-bit int,
# float). Pillow's convert("RGB") clips these at 255, which turns most of a
# 16-bit picture white, so they are rescaled by hand first.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_ORIENTATION = ExifTags.Base.Orientation

# The fallback rule (looks_like_face_crop): a picture this small and nearly square is taken
# as one face crop.
MAX_CROP_SIDE = 512
SQUARE_TOLERANCE = 0.10

# The formats a picture may be in, by Pillow's format name, with the names users know.
# Image.open tries only these plugins: EPS (which runs Ghostscript), ICO, TGA, PSD, FITS …
# are never parsed, whatever the file holds.
PHOTO_FORMATS: dict[str, str] = {
    "JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP", "GIF": "GIF", "TIFF": "TIFF",
}
# Photos (files on disk and uploads to `serve`) may also be Netpbm: the ORL faces ship as
# PGM, and a photo that `dataset build` and `identify` take must not be refused by the page.
FILE_FORMATS: dict[str, str] = {**PHOTO_FORMATS, "PPM": "PGM/PPM"}

# Limits for files on disk. 80 megapixels is more than a 61-megapixel full-frame camera
# gives and below Pillow's own decompression-bomb warning (89 megapixels); the memory
# budget is what 80 megapixels of the widest modes take (see decode_bytes), so for files it
# only matters when max_pixels is raised.
MAX_PIXELS = 80_000_000
MAX_DECODED_BYTES = 1 << 30
# The shorter side a picture needs to be recognized at all: the smallest face the detector
# looks for (MTCNN's min_face_size). A 1x1 "photo" would otherwise get a confident name.
MIN_PICTURE_SIDE = 20

# Bytes per pixel in Pillow's memory; every mode not listed takes 4 (RGB too: RGBX).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Full-size buffers a decoder holds besides the picture (measured with Pillow 13). While
# decoding: libtiff may read a whole-image strip, a progressive JPEG keeps every
# coefficient until its last scan. For as long as the image is open: Pillow's WebP reader
# keeps libwebp's canvas and a bytes copy of the frame.
_DECODING_COPIES = {"TIFF": 1}
_OPEN_COPIES = {"WEBP": 2}
# Pixels converted to RGB at a time: a 16-bit or float picture is rescaled one band of
# rows after another, so the float temporaries stay at a few MB whatever its size.
_BAND_PIXELS = 1 << 20


class ImageError(ValueError):
    """A file could not be read as an image; the message names the file and why."""


class NotAnImageError(ImageError):
    """Data that is not an image in one of the accepted formats."""


class ImageTooLargeError(ImageError):
    """An image with more pixels, or needing more memory, than allowed (checked from the
    header, before decoding)."""


class ImageTooSmallError(ImageError):
    """A picture too small to hold a recognizable face (checked from the header)."""


def load_rgb(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int | None = MAX_PIXELS,
    *,
    formats: Mapping[str, str] = FILE_FORMATS,
    max_bytes: int | None = MAX_DECODED_BYTES,
    min_side: int = 1,
) -> Image.Image:
    """Open an image file (or in-memory image bytes) and return it fully decoded as 8-bit RGB.

    Reads the ``formats`` given (Pillow format name -> the name for messages;
    default JPEG, PNG, WebP, BMP, GIF, TIFF and PGM/PPM) in any mode:
    grayscale, palette, 16-bit, float, and transparent images (flattened onto
    black). The EXIF orientation of phone photos is applied, so faces come
    out upright. Animated files give their first frame.

    Before any pixel is decoded, the header is checked against ``max_pixels``
    (None: no limit), the memory that decoding and converting will take
    (:func:`decode_bytes`) against ``max_bytes`` (None: no limit), and the
    shorter side against ``min_side``. Wide modes are converted band by band,
    never as a float copy of the whole picture.

    ``name`` names the source in messages (default: the path, or "upload").
    Raises :class:`NotAnImageError` for data in no accepted format (naming the
    accepted ones), :class:`ImageTooLargeError` or :class:`ImageTooSmallError`
    for a picture outside the limits, and :class:`ImageError` when the file is
    missing, unreadable or truncated/corrupt.
    """
    in_memory = isinstance(source, bytes)
    where = name or ("upload" if in_memory else str(source))
    try:
        with (io.BytesIO(source) if in_memory else _open_regular(Path(source), where)) as data, \
                Image.open(data, formats=list(formats)) as img:
            _check_header(img, where, max_pixels, max_bytes, min_side)
            try:
                # load() decodes every pixel now: a truncated file fails here, not
                # later in the middle of a training run.
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no second copy
                return _to_rgb(img)
            except BaseException:
                img.close()  # free what was decoded now, not when the traceback is collected
                raise
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{where}: file does not exist") from err
    except (IsADirectoryError, PermissionError) as err:
        raise ImageError(f"{where}: cannot be read ({err.strerror})") from err
    except Image.UnidentifiedImageError as err:
        raise NotAnImageError(
            f"{where}: not an image in an accepted format{_identify(source, formats)}; "
            f"send {_listing(formats)}"
        ) from err
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: image too large ({err})") from err
    except MemoryError as err:
        raise ImageTooLargeError(f"{where}: not enough memory to decode this image") from err
    except Exception as err:
        # Pillow reports truncated or corrupt data with OSError, SyntaxError, ValueError,
        # EOFError, and with whatever a plugin's parser trips over on hostile data
        # (struct.error, IndexError, ZeroDivisionError …): all of them mean a bad file.
        raise ImageError(
            f"{where}: corrupt or truncated image ({type(err).__name__}: {err})"
        ) from err


# What a path that is not a regular file is, for messages.
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _open_regular(path: Path, where: str) -> BinaryIO:
    """``path`` open for reading when it is a regular file (links followed), else
    :class:`ImageError` naming ``where``, before a byte is read: a FIFO would block its
    reader until some writer comes, a device like /dev/zero never ends. Opened without
    blocking, so opening a FIFO does not wait either; the check is on the open file, so
    the path cannot be swapped in between."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _FILE_KINDS if test(mode)), "a special file")
            raise ImageError(f"{where}: {kind}, not a picture file; nothing was read from it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def decode_bytes(img: Image.Image) -> int:
    """Bytes of memory that :func:`load_rgb` may hold at once for opened, not yet loaded ``img``.

    The decoded picture in its own mode and the buffers its decoder keeps
    while the image is open (WebP), plus the largest of: the buffers it holds
    while decoding (TIFF, progressive JPEG), the RGB copy (unless it already
    is RGB) and a transposed copy for an EXIF orientation. Known from the
    header alone; measured peaks (Pillow 13) come within a few MB of it.
    """
    pixels = img.width * img.height
    source = pixels * _PIXEL_BYTES.get(img.mode, 4)
    kept = _OPEN_COPIES.get(img.format or "", 0) * source
    decoding = _DECODING_COPIES.get(img.format or "", 0) * source
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        decoding = source
    rgb = 0 if img.mode == "RGB" else pixels * 4 + min(pixels, _BAND_PIXELS) * _band_bytes(img)
    # A JPEG's EXIF sits before its pixels; elsewhere it may follow them, so assume a turn.
    turns = img.format not in ("JPEG", "MPO") or img.getexif().get(_ORIENTATION, 1) != 1
    return source + kept + max(decoding, rgb, source if turns else 0)


def _band_bytes(img: Image.Image) -> int:
    """Bytes per pixel of one band's temporaries while converting to RGB."""
    if img.mode in _WIDE_MODES:
        return 24  # float32, divided, clipped, rounded; then the L and RGB bands
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return 20  # RGBA, background, composite, RGB
    return 8  # the band and its RGB


def _check_header(img: Image.Image, where: str, max_pixels: int | None,
                  max_bytes: int | None, min_side: int) -> None:
    """Raise :class:`ImageTooLargeError` / :class:`ImageTooSmallError` from the header alone."""
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{where}: {width}x{height} pixels is more than the {max_pixels:,} allowed"
        )
    if max_bytes is not None and (need := decode_bytes(img)) > max_bytes:
        raise ImageTooLargeError(
            f"{where}: a {width}x{height} {img.mode} picture needs {need / 2**20:,.0f} MB to "
            f"decode, more than the {max_bytes / 2**20:,.0f} MB allowed (a smaller or 8-bit "
            "picture fits)"
        )
    if min(width, height) < min_side:
        raise ImageTooSmallError(
            f"{where}: a {width}x{height} picture is too small to recognize a face: it needs "
            f"at least {min_side} pixels on its shorter side"
        )


def _identify(source: str | Path | bytes, formats: Mapping[str, str]) -> str:
    """Say which format the data is (" (it is EPS)") when Pillow knows it but it is not accepted.

    Only the plugins' signature checks run on the first 16 bytes, never a parser.
    """
    try:
        if isinstance(source, bytes):
            prefix = source[:16]
        else:
            with open(source, "rb") as f:
                prefix = f.read(16)
        Image.init()
        for fmt, (_, accept) in Image.OPEN.items():
            if fmt not in formats and accept is not None and accept(prefix):
                return f" (it is {fmt})"
    except Exception:  # a signature check choking on junk: just don't name a format
        pass
    return ""


def _listing(formats: Mapping[str, str]) -> str:
    """The formats' user-facing names as "JPEG, PNG or TIFF"."""
    names = list(formats.values())
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB, one band of rows at a time."""
    if img.mode == "RGB":
        return img
    rows = max(1, _BAND_PIXELS // img.width)
    if rows >= img.height:
        return _band_to_rgb(img)
    rgb = Image.new("RGB", img.size)
    for top in range(0, img.height, rows):
        band = img.crop((0, top, img.width, min(top + rows, img.height)))  # keeps the palette
        rgb.paste(_band_to_rgb(band), (0, top))
    return rgb


def _band_to_rgb(img: Image.Image) -> Image.Image:
    """Convert a (small) image of any mode to 8-bit RGB."""
    if img.mode in _WIDE_MODES:
        # float32 is exact for 16-bit samples and their /257: no rounding differs from float64.
        array = np.asarray(img, dtype=np.float32)
        if img.mode != "F":
            # Integer samples span 0..65535 (Pillow scales 16-bit PGM up to that range).
            array = array / np.float32(257.0)
        img = Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        # Flatten onto a fixed background: the colour stored under fully
        # transparent pixels is arbitrary and must not reach the model.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def looks_like_face_crop(image: Image.Image) -> bool:
    """The fallback rule when no face detector finds a face: a picture is taken as one face
    crop when its sides are within :data:`SQUARE_TOLERANCE` of each other and its longer side
    is at most :data:`MAX_CROP_SIDE` pixels."""
    longer, shorter = max(image.size), min(image.size)
    return longer <= MAX_CROP_SIDE and longer - shorter <= SQUARE_TOLERANCE * longer


def square_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` pixels, then cut the centre ``size``×``size`` square.

    Uses Lanczos resampling (sharp when shrinking, smooth when enlarging).
    Returns a new image; ``img`` is not changed.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    # ImageOps.fit crops the centred square of the right aspect first and then
    # resizes it: the same picture as resize-then-crop, with less work.
    return ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """Encode an image as baseline JPEG bytes (converted to RGB first if needed)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes as 64 lowercase hex digits."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
