"""Hostile and odd requests, built in memory, each with the exact outcome the service must give.

Inputs tested elsewhere are not repeated here: an empty upload, text, truncated PNG/JPEG, TIFF,
a declared Content-Length or a chunked body over the limit, a missing field and a JSON body
(tests/app/test_errors.py); 1×1 and 600×7 images and EXIF orientation 6
(tests/app/routes/test_segment.py); palette, LA, RGBA, CMYK, 16-bit (not clipped), grayscale and
an animated GIF (tests/app/test_decode.py).

`python -m tests.reliability.corpus` sends every case to an in-process app (the shipped weights,
the default settings) and prints a markdown table of the outcomes and times.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.support.service import image_bytes, post_image, running_client

BOUNDARY = "c0rpus"


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line for the README table
    build: Callable[[], Request]
    status: int
    code: str


def multipart(parts: list[bytes], path: str = "/segment") -> Request:
    """A multipart body from raw parts (headers, blank line, content)."""
    body = b"".join(f"--{BOUNDARY}\r\n".encode() + part + b"\r\n" for part in parts)
    return Request(path, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                   body + f"--{BOUNDARY}--\r\n".encode())


def file_part(data: bytes, filename: str, field: str = "file") -> bytes:
    return (f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data


def upload(data: Callable[[], bytes], filename: str) -> Callable[[], Request]:
    return lambda: multipart([file_part(data(), filename)])


def png_chunks(data: bytes) -> dict[bytes, int]:
    """Chunk type → offset of its length field (first chunk of each type)."""
    offsets: dict[bytes, int] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        offsets.setdefault(data[pos + 4:pos + 8], pos)
        pos += 12 + length
    return offsets


def broken_crc(chunk: bytes) -> bytes:
    data = bytearray(image_bytes(16, 16))
    pos = png_chunks(bytes(data))[chunk]
    (length,) = struct.unpack_from(">I", data, pos)
    data[pos + 8 + length] ^= 0xFF  # first byte of the CRC
    return bytes(data)


def png_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose IHDR says width × height, with a valid CRC."""
    data = bytearray(image_bytes(1, 1))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_of_size(width: int, height: int) -> bytes:
    """A real, tiny-on-disk PNG: one-bit pixels, all black."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def eps() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="EPS")
    return buffer.getvalue()


def psd() -> bytes:
    """A PSD header (version 1, 3 channels, 8×8, 8-bit RGB) and empty sections."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 8, 8, 8, 3) + b"\0" * 12


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.png", image_bytes(8, 8))
    return buffer.getvalue()


def random_bytes(prefix: bytes = b"", size: int = 4096) -> bytes:
    return prefix + np.random.default_rng(6).integers(0, 256, size, np.uint8).tobytes()


def empty_parts(count: int, with_filename: bool, path: str = "/segment") -> Request:
    disposition = '; filename="a.png"' if with_filename else ""
    part = f'Content-Disposition: form-data; name="file"{disposition}\r\n\r\n'.encode()
    return multipart([part] * count, path)


HTML = b"<!doctype html><html><head><title>x</title></head><body><img src=x.png></body></html>"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="20000" '
       b'height="20000"><rect width="10" height="10"/></svg>')
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}

CORPUS = [
    Case("html_as_png", "HTML named .png", upload(lambda: HTML, "x.png"), 400, "invalid_image"),
    Case("svg_as_png", "SVG (claiming 20000²) named .png", upload(lambda: SVG, "x.png"), 400,
         "invalid_image"),
    Case("pdf_as_jpg", "PDF named .jpg", upload(lambda: PDF, "x.jpg"), 400, "invalid_image"),
    Case("zip_as_png", "ZIP (holding a PNG) named .png", upload(zip_archive, "x.png"), 400,
         "invalid_image"),
    Case("random_as_jpg", "4 KB of random bytes named .jpg", upload(random_bytes, "x.jpg"), 400,
         "invalid_image"),
    Case("jpeg_magic_then_random", "a JPEG SOI/APP0 marker, then random bytes",
         upload(lambda: random_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"), "x.jpg"), 400,
         "invalid_image"),
    Case("png_magic_then_random", "the PNG signature, then random bytes",
         upload(lambda: random_bytes(b"\x89PNG\r\n\x1a\n"), "x.png"), 400, "invalid_image"),
    Case("psd", "PSD (a format outside the allowlist)", upload(psd, "x.psd"), 415,
         "unsupported_format"),
    Case("eps", "EPS (never handed to Ghostscript)", upload(eps, "x.eps"), 415,
         "unsupported_format"),
    Case("png_idat_crc", "PNG with a broken IDAT CRC (Pillow alone accepts it)",
         upload(lambda: broken_crc(b"IDAT"), "x.png"), 400, "invalid_image"),
    Case("png_ihdr_crc", "PNG with a broken IHDR CRC", upload(lambda: broken_crc(b"IHDR"),
                                                              "x.png"), 400, "invalid_image"),
    Case("png_claims_20000x20000", "69-byte PNG whose header claims 20000×20000",
         upload(lambda: png_claiming(20000, 20000), "x.png"), 413, "too_many_pixels"),
    Case("png_10000x10000", "a real 10000×10000 PNG (1-bit, 12 KB)",
         upload(lambda: png_of_size(10000, 10000), "x.png"), 413, "too_many_pixels"),
    Case("png_20000x1", "a real 20000×1 PNG (side over DECONVSEG_MAX_SIDE)",
         upload(lambda: png_of_size(20000, 1), "x.png"), 413, "side_too_long"),
    Case("png_1x20000", "a real 1×20000 PNG", upload(lambda: png_of_size(1, 20000), "x.png"),
         413, "side_too_long"),
    Case("png_claims_100000x1", "PNG header claiming 100000×1",
         upload(lambda: png_claiming(100000, 1), "x.png"), 413, "side_too_long"),
    Case("multipart_without_parts", "multipart body with no parts",
         lambda: multipart([]), 422, "invalid_request"),
    Case("multipart_garbage", "multipart content type, body not multipart",
         lambda: Request("/segment", MULTIPART, b"this is not multipart at all"), 400,
         "bad_request"),
    Case("multipart_without_boundary", "multipart content type without a boundary",
         lambda: Request("/segment", {"content-type": "multipart/form-data"}, b"--x\r\n"), 400,
         "bad_request"),
    Case("multipart_unterminated", "a part that never ends",
         lambda: Request("/segment", MULTIPART, f"--{BOUNDARY}\r\n".encode()
                         + file_part(image_bytes(), "x.png")), 422, "invalid_request"),
    Case("file_as_text_field", "field 'file' without a filename (a text field)",
         lambda: multipart([b'Content-Disposition: form-data; name="file"\r\n\r\nabc']), 422,
         "invalid_request"),
    Case("urlencoded_form", "application/x-www-form-urlencoded file=...",
         lambda: Request("/segment", {"content-type": "application/x-www-form-urlencoded"},
                         b"file=abc"), 422, "invalid_request"),
    Case("5000_empty_file_parts", "5,000 empty file parts",
         lambda: empty_parts(5000, with_filename=True), 400, "bad_request"),
    Case("5000_empty_fields", "5,000 empty text fields",
         lambda: empty_parts(5000, with_filename=False), 400, "bad_request"),
    Case("5000_empty_parts_batch", "5,000 empty file parts to /segment/batch",
         lambda: empty_parts(5000, with_filename=True, path="/segment/batch"), 400,
         "bad_request"),
    Case("500_empty_parts_batch", "500 empty file parts to /segment/batch",
         lambda: empty_parts(500, with_filename=True, path="/segment/batch"), 413,
         "too_many_files"),
    Case("content_length_not_a_number", "Content-Length: abc",
         lambda: Request("/segment", {**MULTIPART, "content-length": "abc"}, b""), 400,
         "bad_request"),
]


async def table() -> str:
    """Every case against the shipped weights with the default settings: markdown rows."""
    rows = []
    app = create_app(Settings(device="cpu", threads=1, io_threads=1))
    async with running_client(app) as client:
        for data in (image_bytes(), b"junk"):  # first-request costs stay out of the timings
            await post_image(client, data)
        for case in CORPUS:
            request = case.build()
            t0 = time.perf_counter()
            r = await client.post(request.path, content=request.body, headers=request.headers)
            ms = (time.perf_counter() - t0) * 1000
            code = r.json()["error"]["code"]
            expected = (r.status_code, code) == (case.status, case.code)
            rows.append(f"| {case.what} | {r.status_code} `{code}` | {ms:.1f} | "
                        f"{'yes' if expected else 'NO'} |")
    return ("| input | outcome | ms | as expected |\n| --- | --- | --- | --- |\n"
            + "\n".join(rows))


if __name__ == "__main__":
    print(asyncio.run(table()))
