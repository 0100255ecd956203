"""POST /segment and /segment/batch, for the default model's serving version, a named model
(`/models/{name}/...`) or one version of it (`/models/{name}/versions/{version}/...`)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.types import Receive

from app import encode, errors
from app.auth import APIKey
from app.deps import RegistryDep, RuntimeDep, SettingsDep
from app.formats import ALLOWED_TEXT, INCLUDES
from app.objects import DEFAULT_TOLERANCE
from app.pipeline import (
    COMPRESSIBLE,
    JSON_FORMATS,
    MIN_COMPRESSED_BYTES,
    Format,
    ModelVersion,
    Outputs,
    accepts_gzip,
)
from app.registry import Registry
from app.responses import status_of
from app.runtime import Runtime
from app.schemas import (
    BatchItem,
    GeoJSONResponse,
    ObjectsResponse,
    RLEResponse,
    SegmentResponse,
    error_responses,
)

router = APIRouter(tags=["segmentation"], dependencies=[APIKey])
T = TypeVar("T")

# Every upload route, for the load shedding that runs before the router.
UPLOAD_PATHS = re.compile(r"(/models/[^/]+(/versions/[^/]+)?)?/segment(/batch)?"
                          r"|/v2/models/[^/]+(/versions/[^/]+)?/infer")


def upload_route(path: str) -> str:
    """The route template of an upload path: a metrics label of bounded cardinality."""
    parts = path.split("/")
    start = 2 if parts[1:2] == ["v2"] else 1  # /v2/models/{name}/... or /models/{name}/...
    if len(parts) > start + 1 and parts[start] == "models":
        parts[start + 1] = "{name}"
        if len(parts) > start + 3 and parts[start + 2] == "versions":
            parts[start + 3] = "{version}"
    return "/".join(parts)


ERRORS = error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504)
PNG_BODY = {"image/png": {"schema": {"type": "string", "format": "binary"}}}
NPY_BODY = {"application/x-npy": {"schema": {"type": "string", "format": "binary"}}}
# `format: binary` beside FastAPI's OpenAPI 3.1 `contentMediaType`: 3.0-era tools (and
# Schemathesis, which then sends real image files among its samples) read it as a file.
# One upload must hold a byte (an empty one is 400 empty_file). A batch answers each part in its
# own item, an empty one too, so it takes any parts: up to DECONVSEG_MAX_BATCH_FILES, which
# `batch_limit_as_configured` writes into the schema.
FILE_PART = {"type": "string", "contentMediaType": "application/octet-stream", "format": "binary"}
FileField = Annotated[UploadFile, File(description=f"the image: {ALLOWED_TEXT}",
                                       json_schema_extra={**FILE_PART, "minLength": 1})]
FilesField = Annotated[list[UploadFile], File(description="images as repeated 'file' parts",
                                              min_length=1,
                                              json_schema_extra={"items": FILE_PART})]
BatchFormat = Literal["json", "rle", "objects", "geojson"]
FORMAT_TEXT = ("json (default: the mask as base64 PNG), png (the palette PNG), rle (COCO RLE per "
               "class), overlay (the upload blended with the mask, PNG), npy (the uint8 mask as "
               ".npy), objects (JSON: the objects, no mask) or geojson (the objects as a "
               "FeatureCollection)")
INCLUDE_TEXT = (f"for format={', '.join(JSON_FORMATS)}: a comma-separated list of "
                f"{', '.join(INCLUDES)} (confidence: base64 one-band PNG, the winning class's "
                "probability × 255; probabilities: base64 float16 .npy, classes × height × width, "
                "up to DECONVSEG_MAX_PROBABILITY_PIXELS; objects: each class's connected "
                "components with a GeoJSON polygon)")
_NAME = f"\\s*({'|'.join(INCLUDES)})?\\s*"
INCLUDE_PATTERN = f"^{_NAME}(,{_NAME})*$"
Include = Annotated[str | None, Query(description=INCLUDE_TEXT, examples=["confidence,objects"],
                                      pattern=INCLUDE_PATTERN)]
MIN_AREA, MAX_TOLERANCE = 1, 1000  # the bounds of min_area and tolerance
MinArea = Annotated[int, Query(ge=MIN_AREA, description="objects: leave out components smaller "
                                                         "than this many pixels")]
Tolerance = Annotated[float, Query(ge=0, le=MAX_TOLERANCE,
                                   description="objects: polygon simplification in pixels (0: "
                                               "rings exactly 0.25 px inside the pixel edges)")]
RLEKind = Annotated[Literal["compressed", "uncompressed"],
                    Query(description="rle: pycocotools' compressed counts string, or the run "
                                      "list")]


async def outputs(request: Request,
                  output: Annotated[Format, Query(alias="format", description=FORMAT_TEXT)]
                  = Format.json, include: Include = None, min_area: MinArea = 1,
                  tolerance: Tolerance = DEFAULT_TOLERANCE,
                  rle: RLEKind = "compressed") -> Outputs:
    return Outputs.parse(output, include, min_area=min_area, tolerance=tolerance,
                         compressed_rle=rle == "compressed",
                         gzip=accepts_gzip(request.headers.get("accept-encoding")))


async def batch_outputs(request: Request,
                        output: Annotated[BatchFormat, Query(
                            alias="format", description="per item: json, rle, objects or geojson")]
                        = "json", include: Include = None, min_area: MinArea = 1,
                        tolerance: Tolerance = DEFAULT_TOLERANCE,
                        rle: RLEKind = "compressed") -> Outputs:
    return await outputs(request, Format(output), include, min_area, tolerance, rle)


OutputsQuery = Annotated[Outputs, Depends(outputs)]
BatchOutputsQuery = Annotated[Outputs, Depends(batch_outputs)]


def batch_limit_as_configured(openapi: dict[str, Any], max_files: int) -> dict[str, Any]:
    """The schema with each batch route's `file` array capped at `max_files` (more is 413
    too_many_files)."""
    bodies = openapi["components"]["schemas"]
    for path, item in openapi["paths"].items():
        if path.endswith("/segment/batch"):
            ref = item["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            bodies[ref.rsplit("/", 1)[-1]]["properties"]["file"]["maxItems"] = max_files
    return openapi


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`; if the client goes away first (ASGI `receive` says so after the body),
    cancel it so its images are dropped, and raise ClientGone. The work runs in the caller's own
    task, which a watcher cancels: one task per request, not two and an `asyncio.wait`."""
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.create_task(_cancel_on_disconnect(receive, task))
    try:
        return await work
    except asyncio.CancelledError:
        # The watcher ends only by seeing the disconnect (it cancels the task as its last step)
        # or by being cancelled in `finally`, after this.
        if watcher.done() and task.uncancel() == 0:  # the disconnect, and nothing else
            raise errors.ClientGone("client_closed_request",
                                    "the client closed the connection") from None
        raise
    finally:  # also when this handler itself is cancelled
        watcher.cancel()


def model_headers(version: ModelVersion) -> dict[str, str]:
    """What computed the response."""
    return {"X-Model-Name": version.name, "X-Model-Version": str(version.number),
            "X-Model-SHA256": version.ckpt.sha256}


def _batch_item(filename: str | None, outcome: dict[str, Any] | errors.ServingError
                ) -> dict[str, Any]:
    if isinstance(outcome, errors.ServingError):
        return {"filename": filename, "status": status_of(outcome),
                "error": {"code": outcome.code, "message": outcome.message}}
    return {"filename": filename, "status": 200, "result": outcome}


async def segment_upload(receive: Receive, name: str | None, number: int | None, data: bytes,
                         started: float, registry: Registry, runtime: Runtime,
                         output: Outputs) -> Response:
    """One upload's bytes (read since `started`) through the model the path names: what every
    single-image route answers, through FastAPI or the fast path (`app.fastpath`)."""
    with registry.lease(name, number) as version:
        encoded, timings = await unless_disconnected(
            receive, runtime.segment_and_encode(version, data, output, started))
    timing = ", ".join(f"{stage};dur={ms}" for stage, ms in timings.items())
    headers = {"Server-Timing": timing, **model_headers(version)}
    if output.format in COMPRESSIBLE:  # the body may differ by Accept-Encoding: say so to caches
        headers["Vary"] = "Accept-Encoding"
    if encoded.content_encoding:
        headers["Content-Encoding"] = encoded.content_encoding
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


async def _segment(request: Request, name: str | None, number: int | None, file: UploadFile,
                   registry: Registry, runtime: Runtime, output: Outputs) -> Response:
    started = time.perf_counter()
    return await segment_upload(request.receive, name, number, await file.read(), started,
                                registry, runtime, output)


async def _segment_batch(request: Request, name: str | None, number: int | None,
                         files: list[UploadFile], registry: Registry, runtime: Runtime,
                         max_files: int, output: Outputs) -> Response:
    if len(files) > max_files:
        raise errors.TooLarge("too_many_files", f"{len(files)} files sent; the limit is "
                              f"{max_files} per request (DECONVSEG_MAX_BATCH_FILES)")
    started = time.perf_counter()
    uploads = [(upload.filename, await upload.read()) for upload in files]
    with registry.lease(name, number) as version:
        with runtime.admission.request():
            outcomes = await unless_disconnected(request.receive, runtime.segment_batch(
                version, [data for _, data in uploads], output, started))
            items = [_batch_item(filename, outcome)
                     for (filename, _), outcome in zip(uploads, outcomes, strict=True)]
            body = await runtime.run_io(orjson.dumps, items)
    headers = model_headers(version) | {"Vary": "Accept-Encoding"}
    if output.gzip and len(body) >= MIN_COMPRESSED_BYTES:
        body = await runtime.run_io(encode.gzip, body)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


ModelName = Annotated[str, Path(description="a model in the repository")]
VersionNumber = Annotated[int, Path(ge=1, description="a version of the model")]
SEGMENT: dict[str, Any] = {
    "response_model": SegmentResponse | RLEResponse | ObjectsResponse | GeoJSONResponse,
    "responses": {200: {"description": "json, rle, objects: JSON; png, overlay: image/png; "
                                       "npy: application/x-npy; geojson: application/geo+json",
                        "content": {**PNG_BODY, **NPY_BODY,
                                    "application/geo+json": {"schema": {
                                        "$ref": "#/components/schemas/GeoJSONResponse"}}}},
                  **ERRORS}}
BATCH: dict[str, Any] = {"response_model": list[BatchItem],
         "responses": {200: {"description": "one item per file, in upload order"}, **ERRORS}}


@router.post("/segment", **SEGMENT)
async def segment(request: Request, file: FileField, registry: RegistryDep, runtime: RuntimeDep,
                  output: OutputsQuery) -> Response:
    """Segment one image with the default model; the mask has the upload's (EXIF-oriented)
    width × height."""
    return await _segment(request, None, None, file, registry, runtime, output)


@router.post("/models/{name}/segment", **SEGMENT)
async def segment_with_model(request: Request, name: ModelName, file: FileField,
                             registry: RegistryDep, runtime: RuntimeDep,
                             output: OutputsQuery) -> Response:
    """Segment one image with the named model's serving version."""
    return await _segment(request, name, None, file, registry, runtime, output)


@router.post("/models/{name}/versions/{version}/segment", **SEGMENT)
async def segment_with_version(request: Request, name: ModelName, version: VersionNumber,
                               file: FileField, registry: RegistryDep, runtime: RuntimeDep,
                               output: OutputsQuery) -> Response:
    """Segment one image with one version of the named model."""
    return await _segment(request, name, version, file, registry, runtime, output)


@router.post("/segment/batch", **BATCH)
async def segment_batch(request: Request, file: FilesField, registry: RegistryDep,
                        runtime: RuntimeDep, settings: SettingsDep,
                        output: BatchOutputsQuery) -> Response:
    """Segment several images with the default model; a failing image is reported in its own
    item."""
    return await _segment_batch(request, None, None, file, registry, runtime,
                                settings.max_batch_files, output)


@router.post("/models/{name}/segment/batch", **BATCH)
async def segment_batch_with_model(request: Request, name: ModelName, file: FilesField,
                                   registry: RegistryDep, runtime: RuntimeDep,
                                   settings: SettingsDep,
                                   output: BatchOutputsQuery) -> Response:
    """Segment several images with the named model's serving version."""
    return await _segment_batch(request, name, None, file, registry, runtime,
                                settings.max_batch_files, output)


@router.post("/models/{name}/versions/{version}/segment/batch", **BATCH)
async def segment_batch_with_version(request: Request, name: ModelName, version: VersionNumber,
                                     file: FilesField, registry: RegistryDep,
                                     runtime: RuntimeDep, settings: SettingsDep,
                                     output: BatchOutputsQuery) -> Response:
    """Segment several images with one version of the named model."""
    return await _segment_batch(request, name, version, file, registry, runtime,
                                settings.max_batch_files, output)
