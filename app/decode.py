"""Upload bytes → RGB uint8 array (H, W, 3): format allowlist, pixel limit, EXIF orientation."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import APIError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
ALLOWED_TEXT = "JPEG, PNG, WebP, BMP or GIF"
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow limits, set once at start-up.

    `decode_image` refuses anything over `max_pixels` itself, from the header and with the
    image's size in the message, so Pillow's warning band (1-2× its limit) is silenced; its hard
    error above 2× stays as a backstop for decoders that check sizes again while loading.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> APIError:
    return APIError(413, "too_many_pixels",
                    f"the image is {width}×{height} = {width * height:,} pixels; the limit is "
                    f"{max_pixels:,} pixels ({max_pixels / 1e6:g} MP); send a smaller image")


def _bomb(exc: Image.DecompressionBombError, max_pixels: int) -> APIError:
    """Pillow's hard limit (2× ours) fired before our own check could name the size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else f"over {2 * max_pixels:,} pixels"
    return APIError(413, "too_many_pixels",
                    f"the image is {size}; the limit is {max_pixels:,} pixels "
                    f"({max_pixels / 1e6:g} MP); send a smaller image")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any mode → (H, W, 3) uint8: 16-bit scaled to 0..255 (not clipped), alpha dropped."""
    if image.mode in HIGH_DEPTH_MODES:
        # 16-bit PNGs open as I;16* (or I with values ≤ 65535): scale the full range.
        grey = np.asarray(image).astype(np.int64).clip(0, 65535)
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the palette's transparency needs RGBA to convert cleanly
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _unaccepted(data: bytes) -> APIError:
    """415 when Pillow knows the format but we do not accept it, else 400."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            name = image.format
    except Exception:  # any failure here just means "not an image"
        name = None
    if name:
        return APIError(415, "unsupported_format",
                        f"{name} images are not accepted; send {ALLOWED_TEXT}")
    return APIError(400, "invalid_image",
                    f"the file is not a readable image; send {ALLOWED_TEXT}")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode an upload; raise APIError 400/413/415 with a message a user can act on.

    The size is checked from the header, before any pixel data is decoded.
    """
    if not data:
        raise APIError(400, "empty_file", f"the uploaded file is empty (0 bytes); "
                                          f"send {ALLOWED_TEXT}")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise _unaccepted(data) from None
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except Exception as exc:  # hostile bytes can break a header parser in any way: client input
        raise APIError(400, "invalid_image",
                       f"the image header cannot be read ({type(exc).__name__})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels)
        try:
            image.load()  # an animated GIF or WebP loads its first frame
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
        except Image.DecompressionBombError as exc:
            raise _bomb(exc, max_pixels) from None
        except Exception as exc:
            raise APIError(400, "invalid_image",
                           f"the {image.format} data is truncated or corrupt "
                           f"({type(exc).__name__}: {str(exc)[:120]})") from None
