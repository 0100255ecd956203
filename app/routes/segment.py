"""POST /segment and POST /segment/batch."""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app import encode
from app.auth import APIKey
from app.deps import ServiceDep
from app.errors import APIError
from app.schemas import BatchItem, ErrorResponse, RLEResponse, SegmentResponse
from app.service import Segmented, Service

router = APIRouter(tags=["segmentation"], dependencies=[APIKey])


class Format(StrEnum):
    json = "json"
    png = "png"
    rle = "rle"
    overlay = "overlay"


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("empty, corrupt or truncated image"),
    401: _err("API key missing or wrong (only when DECONVSEG_API_KEY is set)"),
    413: _err("body over DECONVSEG_MAX_UPLOAD_BYTES, or image over the pixel/side limit"),
    415: _err("image format not accepted (allowed: JPEG, PNG, WebP, BMP, GIF)"),
    422: _err("the multipart field 'file' is missing, or a query value is invalid"),
    503: _err("queue full or not ready; see Retry-After"),
    504: _err("not processed within DECONVSEG_REQUEST_TIMEOUT_S"),
}

FileField = Annotated[UploadFile, File(description="the image: JPEG, PNG, WebP, BMP or GIF")]
FormatQuery = Annotated[Format, Query(description="response body: json, png, rle or overlay")]


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _run_or_abandon(request: Request, work: asyncio.Future) -> Any:
    """Await `work`, cancelling it (so its image is dropped before compute) if the client goes."""
    watcher = asyncio.create_task(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            raise APIError(499, "client_closed", "the client closed the connection")
        return work.result()
    finally:
        watcher.cancel()


def _json_body(service: Service, seg: Segmented) -> dict[str, Any]:
    ckpt = service.ckpt
    height, width = seg.mask.shape
    return {"width": width, "height": height, "classes": ckpt.classes,
            "mask": {"encoding": "png", "data": encode.mask_png_base64(seg.mask, ckpt.palette)},
            "areas": encode.areas(seg.mask, ckpt.classes),
            "model": {"name": ckpt.name, "sha256": ckpt.sha256}}


def _rle_body(service: Service, seg: Segmented) -> dict[str, Any]:
    ckpt = service.ckpt
    height, width = seg.mask.shape
    return {"width": width, "height": height, "classes": ckpt.classes,
            "rle": encode.rle_by_class(seg.mask, ckpt.classes),
            "areas": encode.areas(seg.mask, ckpt.classes),
            "model": {"name": ckpt.name, "sha256": ckpt.sha256}}


def _encode(service: Service, seg: Segmented, fmt: Format) -> tuple[Any, float]:
    t0 = time.perf_counter()
    palette = service.ckpt.palette
    if fmt is Format.png:
        body: Any = encode.mask_png(seg.mask, palette)
    elif fmt is Format.overlay:
        body = encode.overlay_png(seg.image, seg.mask, palette)
    elif fmt is Format.rle:
        body = _rle_body(service, seg)
    else:
        body = _json_body(service, seg)
    return body, (time.perf_counter() - t0) * 1000


async def _segment_body(service: Service, data: bytes, fmt: Format,
                        started: float) -> tuple[Any, dict[str, float]]:
    """decode → batch → predict → encode; the body is bytes (PNG) or a JSON-able dict."""
    seg = await service.segment(data, started)
    body, encode_ms = await service.run_io(_encode, service, seg, fmt)
    service.metrics.stage_seconds.labels("encode").observe(encode_ms / 1000)
    seg.timings_ms["encode"] = round(encode_ms, 3)
    if isinstance(body, dict):
        body["timings_ms"] = seg.timings_ms
    return body, seg.timings_ms


async def _segment_one(service: Service, data: bytes, fmt: Format, started: float) -> Response:
    body, timings = await _segment_body(service, data, fmt, started)
    headers = {"Server-Timing": ", ".join(f"{k};dur={v}" for k, v in timings.items()),
               "X-Model-SHA256": service.ckpt.sha256}
    if isinstance(body, bytes):
        return Response(body, media_type="image/png", headers=headers)
    return JSONResponse(body, headers=headers)


@router.post(
    "/segment",
    response_model=SegmentResponse | RLEResponse,
    responses={200: {"description": "json (default) or rle: JSON; png or overlay: image/png",
                     "content": {"image/png": {"schema": {"type": "string",
                                                          "format": "binary"}}}},
               **ERRORS},
)
async def segment(request: Request, file: FileField, service: ServiceDep,
                  format: FormatQuery = Format.json) -> Response:
    """Segment one image; the mask has the upload's (EXIF-oriented) width × height."""
    started = time.perf_counter()
    data = await file.read()
    work = asyncio.create_task(_segment_one(service, data, format, started))
    return await _run_or_abandon(request, work)


@router.post("/segment/batch", response_model=list[BatchItem],
             responses={**ERRORS, 200: {"model": list[BatchItem],
                                        "description": "one item per file, in order"}})
async def segment_batch(request: Request, file: Annotated[list[UploadFile], File(
        description="several images as repeated 'file' parts")], service: ServiceDep) -> Response:
    """Segment several images (JSON results in upload order; errors reported per item)."""
    if len(file) > service.settings.max_files:
        raise APIError(413, "too_many_files", f"{len(file)} files sent; the limit is "
                       f"{service.settings.max_files} per request")
    started = time.perf_counter()
    payloads = [await f.read() for f in file]

    async def one(upload: UploadFile, data: bytes) -> dict[str, Any]:
        try:
            body, _ = await _segment_body(service, data, Format.json, started)
            return {"filename": upload.filename, "result": body}
        except APIError as exc:
            return {"filename": upload.filename, "error": {"code": exc.code,
                                                            "message": exc.message}}

    work = asyncio.gather(*(one(u, d) for u, d in zip(file, payloads, strict=True)))
    return JSONResponse(await _run_or_abandon(request, work))

