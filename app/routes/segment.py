"""POST /segment and POST /segment/batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response

from app.auth import APIKey
from app.deps import ServiceDep, SettingsDep
from app.errors import APIError
from app.schemas import BatchItem, RLEResponse, SegmentResponse, error_responses
from app.service import Format

router = APIRouter(tags=["segmentation"], dependencies=[APIKey])
T = TypeVar("T")

ERRORS = error_responses(400, 401, 413, 415, 422, 500, 503, 504)
PNG_BODY = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
FileField = Annotated[UploadFile, File(description="the image: JPEG, PNG, WebP, BMP or GIF")]
FilesField = Annotated[list[UploadFile], File(description="images as repeated 'file' parts",
                                              min_length=1)]
FormatQuery = Annotated[Format, Query(alias="format",
                                      description="body: json, png, rle or overlay")]
BatchFormat = Annotated[Literal["json", "rle"],
                        Query(alias="format", description="json or rle per item")]


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client goes away first, cancel it so its images are dropped."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            raise APIError(499, "client_closed_request", "the client closed the connection")
        return task.result()
    finally:  # also when this handler itself is cancelled
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # its images are marked abandoned before we return


@router.post("/segment", response_model=SegmentResponse | RLEResponse,
             responses={200: {"description": "json or rle: JSON; png or overlay: image/png",
                              "content": PNG_BODY}, **ERRORS})
async def segment(request: Request, file: FileField, service: ServiceDep,
                  output: FormatQuery = Format.json) -> Response:
    """Segment one image; the mask has the upload's (EXIF-oriented) width × height."""
    started = time.perf_counter()
    data = await file.read()
    encoded = await _unless_disconnected(
        request, service.segment_and_encode(data, output, started))
    timing = ", ".join(f"{stage};dur={ms}" for stage, ms in encoded.timings_ms.items())
    return Response(encoded.body, media_type=encoded.media_type,
                    headers={"Server-Timing": timing, "X-Model-SHA256": service.ckpt.sha256})


@router.post("/segment/batch", response_model=list[BatchItem],
             responses={200: {"description": "one item per file, in upload order"}, **ERRORS})
async def segment_batch(request: Request, file: FilesField, service: ServiceDep,
                        settings: SettingsDep, output: BatchFormat = "json") -> Response:
    """Segment several images; a failing image is reported in its own item."""
    if len(file) > settings.max_batch_files:
        raise APIError(413, "too_many_files", f"{len(file)} files sent; the limit is "
                       f"{settings.max_batch_files} per request (DECONVSEG_MAX_BATCH_FILES)")
    started = time.perf_counter()
    files = [(upload.filename, await upload.read()) for upload in file]
    body = await _unless_disconnected(
        request, service.segment_batch(files, Format(output), started))
    return Response(body, media_type="application/json")
