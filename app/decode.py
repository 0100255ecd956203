"""Upload bytes → RGB uint8 array (H, W, 3), with format, size and pixel limits."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import APIError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

# Our own limit (checked from the header, before any pixel is decoded) is the real guard;
# Pillow's bomb check is kept as a backstop for formats that lie in their header.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    max_side: int


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Every mode to 8-bit RGB: 16/32-bit scaled to 0..255 (not clipped), alpha dropped."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            peak = 1.0 if a.size and np.nanmax(a) <= 1.0 else 65535.0
        else:
            peak = 65535.0 if not a.size or a.max() <= 65535 else float(np.iinfo(np.int32).max)
        gray = np.clip(np.nan_to_num(a) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def decode_image(data: bytes, limits: DecodeLimits) -> np.ndarray:
    """Decode an upload; raise APIError 400/413/415 with a message a user can act on."""
    if not data:
        raise APIError(400, "empty_file", "the uploaded file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise APIError(400, "invalid_image",
                       "the file is not a readable image; send JPEG, PNG, WebP, BMP or GIF"
                       ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise APIError(413, "too_many_pixels",
                       f"the image is too large; the limit is {limits.max_pixels:,} pixels"
                       ) from None
    except Exception as exc:  # any other parser failure on hostile bytes is the client's input
        raise APIError(400, "invalid_image", f"the image header cannot be read ({exc})") from None
    with im:
        if im.format not in ALLOWED_FORMATS:
            raise APIError(415, "unsupported_format",
                           f"{im.format} images are not accepted; send "
                           f"{', '.join(ALLOWED_FORMATS[:-1])} or {ALLOWED_FORMATS[-1]}")
        width, height = im.size
        if width < 1 or height < 1:
            raise APIError(400, "invalid_image", f"the image is {width}×{height}")
        if max(width, height) > limits.max_side:
            raise APIError(413, "image_too_large",
                           f"the image is {width}×{height}; the longest side allowed is "
                           f"{limits.max_side} pixels")
        if width * height > limits.max_pixels:
            raise APIError(413, "too_many_pixels",
                           f"the image is {width}×{height} = {width * height:,} pixels; the "
                           f"limit is {limits.max_pixels:,}")
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            oriented = ImageOps.exif_transpose(im)
            return _to_rgb(oriented)
        except Exception as exc:
            raise APIError(400, "invalid_image",
                           f"the {im.format} data is truncated or corrupt ({exc})") from None
