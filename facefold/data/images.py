"""Image file helpers shared by the whole project.

Everything that opens a picture from disk goes through :func:`load_rgb`, so
every part of facefold (dataset builder, predict, the web demo) agrees on what
counts as a readable image and how it becomes an 8-bit RGB array.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

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


class ImageError(ValueError):
    """A file could not be read as an image; the message names the file and why."""


class NotAnImageError(ImageError):
    """Data that Pillow does not recognize as any image format."""


class ImageTooLargeError(ImageError):
    """An image with more pixels than allowed (checked from the header, before decoding)."""


def load_rgb(
    source: str | Path | bytes, name: str | None = None, max_pixels: int | None = None
) -> Image.Image:
    """Open an image file (or in-memory image bytes) and return it fully decoded as 8-bit RGB.

    Accepts anything Pillow reads (JPEG, PNG, PGM, WebP, BMP, GIF, TIFF …) in
    any mode: grayscale, palette, 16-bit, and transparent images (flattened
    onto black). The EXIF orientation of phone photos is applied, so faces
    come out upright. Animated files give their first frame.

    ``name`` names the source in messages (default: the path, or "upload").
    Raises :class:`NotAnImageError` for data in no image format,
    :class:`ImageTooLargeError` for more than ``max_pixels`` pixels, and
    :class:`ImageError` when the file is missing or truncated/corrupt.
    """
    in_memory = isinstance(source, bytes)
    where = name or ("upload" if in_memory else str(source))
    try:
        with Image.open(io.BytesIO(source) if in_memory else Path(source)) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageTooLargeError(
                    f"{where}: {img.width}x{img.height} pixels is more than the "
                    f"{max_pixels:,} allowed"
                )
            # load() decodes every pixel now: a truncated file fails here, not
            # later in the middle of a training run.
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"{where}: file does not exist") from err
    except Image.UnidentifiedImageError as err:
        raise NotAnImageError(f"{where}: not an image Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: image too large ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports truncated or corrupt data with any of these.
        raise ImageError(f"{where}: corrupt or truncated image ({err})") from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB."""
    if img.mode in _WIDE_MODES:
        array = np.asarray(img, dtype=np.float64)
        if img.mode != "F":
            # Integer samples span 0..65535 (Pillow scales 16-bit PGM up to that range).
            array = array / 257.0
        img = Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Flatten onto a fixed background: the colour stored under fully
        # transparent pixels is arbitrary and must not reach the model.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


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
