"""Upload bytes → RGB uint8 array (H, W, 3): format allowlist, size limits, EXIF orientation.

Only the allowlisted Pillow plugins ever parse an upload's header. A JPEG's pixels (RGB or grey)
are then decoded by torchvision's libjpeg-turbo straight into one (H, W, 3) uint8 block, which
is returned as it is: Pillow's route holds a 4-byte-per-pixel buffer beside the 3-byte copy
NumPy takes of it (470 MB at 8192² against 201 MB) and is slower; the pixels are the same
(`tests/app/test_decode.py`). CMYK JPEGs and every other format decode through Pillow.

Anything else is named from its magic bytes for the 415 message, so the header parsers of
formats we refuse (PSD, EPS, TIFF, …) never run on hostile input. Sizes are checked from the
header before any pixel is decoded, and a PNG's chunk CRCs are verified (Pillow skips them for
IDAT).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from app.errors import InvalidInput, TooLarge, UnsupportedFormat
from app.formats import ALLOWED_FORMATS, ALLOWED_TEXT, PNG_SIGNATURE

JPEG_MODES_TO_TENSOR = ("RGB", "L")  # JPEG modes whose pixels torchvision decodes
# Process-wide (filters changed per call would race between I/O threads): the upload's bytes are
# only read; torchvision 0.29 marks its image codecs deprecated for TorchCodec (which needs FFmpeg).
warnings.filterwarnings("ignore", message="The given buffer is not writable")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# Image formats we refuse, by their magic bytes: (offset, signature, name).
REFUSED_SIGNATURES = (
    (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (0, b"8BPS", "PSD"), (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"), (0, b"\x00\x00\x01\x00", "ICO"), (0, b"icns", "ICNS"),
    (0, b"qoif", "QOI"), (0, b"DDS ", "DDS"), (0, b"\x01\xda", "SGI"), (0, b"gimp xcf", "XCF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (0, b"\xffO\xffQ", "JPEG 2000"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (0, b"\xff\n", "JPEG XL"),
    (0, b"SIMPLE  =", "FITS"), (0, b"Image type:", "IM"), (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"), (4, b"ftypmif1", "HEIF"), (4, b"ftypavif", "AVIF"),
)


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow limits, set once at start-up.

    `decode_image` refuses anything over `max_pixels` itself, from the header and with the
    image's size in the message, so Pillow's warning band (1-2× its limit) is silenced; its hard
    error above 2× stays as a backstop for decoders that check sizes again while loading.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> TooLarge:
    return TooLarge("too_many_pixels",
                    f"the image is {width}×{height} = {width * height:,} pixels; the limit is "
                    f"{max_pixels:,} pixels ({max_pixels / 1e6:g} MP); send a smaller image")


def _side_too_long(width: int, height: int, max_side: int) -> TooLarge:
    return TooLarge("side_too_long",
                    f"the image is {width}×{height}; its longest side is {max(width, height):,} "
                    f"pixels and the limit is {max_side:,}; send a smaller image")


def _bomb(exc: Image.DecompressionBombError, max_pixels: int) -> TooLarge:
    """Pillow's hard limit (2× ours) fired before our own check could name the size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else f"over {2 * max_pixels:,} pixels"
    return TooLarge("too_many_pixels",
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


def _unaccepted(data: bytes) -> InvalidInput | UnsupportedFormat:
    """415 for an image format we know and refuse (named from its magic bytes), else 400."""
    name = next((name for offset, magic, name in REFUSED_SIGNATURES
                 if data[offset:offset + len(magic)] == magic), None)
    if name is None and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        name = "PNM"
    if name:
        return UnsupportedFormat("unsupported_format",
                        f"{name} images are not accepted; send {ALLOWED_TEXT}")
    return InvalidInput("invalid_image",
                    f"the file is not a readable image; send {ALLOWED_TEXT}")


def _check_png_crcs(data: bytes) -> None:
    """Every PNG chunk's CRC must match; Pillow checks the header chunks but not IDAT."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            return  # truncated: the decoder reports it
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(memoryview(data)[pos + 4:end]) != crc:
            kind = data[pos + 4:pos + 8].decode("latin-1")
            raise InvalidInput("invalid_image", f"the PNG is corrupt: chunk {kind!r} at byte "
                                                 f"{pos} fails its CRC check")
        if data[pos + 4:pos + 8] == b"IEND":
            return
        pos = end + 4


def decode_image(data: bytes, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """Decode an upload; raise InvalidInput, TooLarge or UnsupportedFormat with a message a
    user can act on.

    The size (pixels, and the longest side when `max_side` is set) is checked from the header,
    before any pixel data is decoded.
    """
    if not data:
        raise InvalidInput("empty_file", f"the uploaded file is empty (0 bytes); "
                                          f"send {ALLOWED_TEXT}")
    if data.startswith(PNG_SIGNATURE):
        _check_png_crcs(data)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise _unaccepted(data) from None
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except Exception as exc:  # hostile bytes can break a header parser in any way: client input
        raise InvalidInput("invalid_image",
                       f"the image header cannot be read ({type(exc).__name__})") from None
    with image:
        width, height = image.size
        check_size(width, height, max_pixels, max_side)
        if image.format == "JPEG" and image.mode in JPEG_MODES_TO_TENSOR:
            return _decode_jpeg(data)
        try:
            image.load()  # an animated GIF or WebP loads its first frame
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
        except Image.DecompressionBombError as exc:
            raise _bomb(exc, max_pixels) from None
        except Exception as exc:
            raise InvalidInput("invalid_image",
                           f"the {image.format} data is truncated or corrupt "
                           f"({type(exc).__name__}: {str(exc)[:120]})") from None


def _decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8, EXIF-oriented (torchvision's (3, H, W) result is a view of
    channels-last memory, so its permutation back is the block itself)."""
    raw = torch.frombuffer(data, dtype=torch.uint8)
    try:
        pixels = decode_jpeg(raw, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as exc:
        reason = str(exc).rsplit(", ", 1)[-1][:120]  # libjpeg's words, not torchvision's path
        raise InvalidInput("invalid_image",
                           f"the JPEG data is truncated or corrupt ({reason})") from None
    return pixels.permute(1, 2, 0).numpy()


def check_pixels(image: np.ndarray, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """An already-decoded RGB array (the v2 protocol's `image` tensor) under the same limits as
    an upload: uint8 (H, W, 3), at least 1×1."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput("invalid_image", f"an image tensor must be uint8 (H, W, 3); got "
                                            f"{image.dtype} {tuple(image.shape)}")
    height, width = image.shape[:2]
    check_size(width, height, max_pixels, max_side)
    return image


def check_size(width: int, height: int, max_pixels: int, max_side: int | None = None) -> None:
    """An image of width × height: at least 1×1, within the pixel and side limits."""
    if not height or not width:
        raise InvalidInput("invalid_image", f"the image is {width}×{height}; it needs pixels")
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    if max_side is not None and max(width, height) > max_side:
        raise _side_too_long(width, height, max_side)
