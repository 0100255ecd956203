"""The Open Inference Protocol (KServe / Triton "v2") REST API, beside our own routes.

Inputs: `image` UINT8 [N, H, W, 3] (raw RGB) or `image_bytes` BYTES [N] (encoded files, decoded
like uploads). Outputs: `mask` UINT8 [N, H, W] (the default), and on request `probabilities`
FP16 [N, K, H, W] (softmax) and `confidence` UINT8 [N, H, W] (the winning class's probability
× 255). Each image goes through the same pipeline as `/segment`: the same limits, dynamic
batching, and the same masks pixel for pixel.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

from app import errors, oip
from app.auth import APIKey
from app.decode import check_size
from app.deps import RegistryDep, RuntimeDep, SettingsDep
from app.pipeline import ModelVersion, Segmented
from app.registry import Registry
from app.routes.segment import model_headers, unless_disconnected
from app.runtime import Runtime
from app.schemas import V2InferRequest, error_responses, inline_schema
from app.settings import Settings

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
ModelName = Annotated[str, Path(description="a model in the repository")]
VersionText = Annotated[str, Path(description="a version of the model")]
EXTENSIONS = ["binary_tensor_data", "model_repository"]
OUTPUTS = ("mask", "probabilities", "confidence")


def _version_number(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isdigit() and int(text) >= 1):
        raise errors.NotFound("version_not_found",
                              f"'{text}' is not a version; versions are positive integers")
    return int(text)


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Server name, version and the protocol extensions it speaks."""
    return {"name": "deconvseg", "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """200 while the process serves HTTP."""
    return {"live": True}


@router.get("/health/ready", responses=error_responses(503, protocol=True))
async def server_ready(runtime: RuntimeDep, registry: RegistryDep) -> dict[str, bool]:
    """200 once start-up is done and the default model serves; 503 otherwise."""
    if not runtime.admission.ready:
        raise errors.not_ready(runtime.admission.state)
    with registry.lease():
        return {"ready": True}


def _metadata(version: ModelVersion, versions: list[str]) -> dict[str, Any]:
    classes = version.ckpt.classes
    return {
        "name": version.name, "versions": versions, "platform": "pytorch_torchscript",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
                   {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "mask", "datatype": "UINT8", "shape": [-1, -1, -1]},
                    {"name": "probabilities", "datatype": "FP16",
                     "shape": [-1, len(classes), -1, -1]},
                    {"name": "confidence", "datatype": "UINT8", "shape": [-1, -1, -1]}],
        "parameters": {"classes": classes, "palette": version.ckpt.palette},
    }


def _ready_versions(registry: Registry, name: str) -> list[str]:
    return [str(v["version"]) for v in registry.status(name)["versions"]
            if v["state"] == "ready"]


READ_ERRORS = error_responses(401, 404, 422, 503, protocol=True)
INFER: dict[str, Any] = {"dependencies": [APIKey], "response_class": JSONResponse,
         "responses": error_responses(400, 401, 404, 413, 415, 422, 500, 503, 504,
                                      protocol=True),
         "openapi_extra": {"requestBody": {"required": True, "content": {
             "application/json": {"schema": inline_schema(V2InferRequest)}}}}}


@router.get("/models/{name}", dependencies=[APIKey], responses=READ_ERRORS)
async def model_metadata(name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    """Inputs and outputs (-1: any size), the ready versions and the class names."""
    with registry.lease(name) as version:
        return _metadata(version, _ready_versions(registry, name))


@router.get("/models/{name}/versions/{version}", dependencies=[APIKey], responses=READ_ERRORS)
async def model_version_metadata(name: ModelName, version: VersionText,
                                 registry: RegistryDep) -> dict[str, Any]:
    """The same, for one version."""
    with registry.lease(name, _version_number(version)) as found:
        return _metadata(found, [str(found.number)])


@router.get("/models/{name}/ready", dependencies=[APIKey], responses=READ_ERRORS)
async def model_ready(name: ModelName, registry: RegistryDep) -> dict[str, Any]:
    """200 when the model has a serving version; 503 (or 404) otherwise."""
    with registry.lease(name):
        return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", dependencies=[APIKey],
            responses=READ_ERRORS)
async def model_version_ready(name: ModelName, version: VersionText,
                              registry: RegistryDep) -> dict[str, Any]:
    """200 when this version serves."""
    with registry.lease(name, _version_number(version)):
        return {"name": name, "version": version, "ready": True}


def _images(request: oip.InferRequest) -> list[bytes | np.ndarray]:
    if len(request.inputs) != 1:
        raise errors.InvalidInput("invalid_tensor", "send one input: 'image' or 'image_bytes'")
    (tensor,) = request.inputs.values()
    if tensor.name == "image_bytes" and len(tensor.shape) != 1:
        raise errors.InvalidInput("invalid_tensor", "'image_bytes' must have shape [N]")
    return list(tensor.data)


def _specs(settings: Settings) -> dict[str, oip.InputSpec]:
    """The upload limits as tensor limits: at most `max_batch_files` images, each within
    `max_pixels` and `max_side`, refused from the shape before any tensor is built."""
    files = settings.max_batch_files

    def image_shape(shape: list[int]) -> None:
        if len(shape) != 4 or shape[3] != 3:
            raise errors.InvalidInput("invalid_tensor",
                                      f"'image' must have shape [N, H, W, 3]; got {shape}")
        height, width = shape[1:3]
        check_size(width, height, settings.max_pixels, settings.max_side)

    return {"image": oip.InputSpec("UINT8", files * settings.max_pixels * 3, image_shape),
            "image_bytes": oip.InputSpec("BYTES", files)}


async def _infer(request: Request, name: str, number: int | None, registry: Registry,
                 runtime: Runtime, settings: Settings) -> Response:
    started = time.perf_counter()
    body = await request.body()
    parsed = oip.parse_request(body, request.headers.get(oip.HEADER), _specs(settings))
    images = _images(parsed)
    if not images:
        raise errors.InvalidInput("invalid_tensor", "the batch holds no image")
    if len(images) > settings.max_batch_files:
        raise errors.TooLarge("too_many_files", f"{len(images)} images in one request; the "
                              f"limit is {settings.max_batch_files} (DECONVSEG_MAX_BATCH_FILES)")
    wanted = parsed.outputs or ["mask"]
    unknown = [o for o in wanted if o not in OUTPUTS]
    if unknown:
        raise errors.InvalidInput("invalid_tensor", f"unknown output {unknown[0]!r}; this "
                                  f"model returns {', '.join(OUTPUTS)}")
    with registry.lease(name, number) as version:
        with runtime.admission.request():
            segs = await unless_disconnected(request.receive, _segment_all(
                runtime, version, images, started, probabilities=wanted != ["mask"]))
            tensors = await runtime.run_io(_output_tensors, segs, wanted)
        payload, headers = oip.encode_response(version.name, str(version.number), parsed,
                                               tensors)
        headers |= model_headers(version)
    media = headers.pop("Content-Type")
    return Response(payload, media_type=media, headers=headers)


def _output_tensors(segs: list[Segmented], wanted: list[str]) -> list[oip.Tensor]:
    """The requested outputs as [N, ...] tensors (I/O thread)."""
    if len({seg.mask.shape for seg in segs}) > 1:
        raise errors.InvalidInput("invalid_tensor", "the images of one request must share a "
                                  "size (each output is one [N, ...] tensor); send them apart")
    tensors = []
    for name in wanted:
        if name == "mask":
            data = np.stack([seg.mask for seg in segs])
        else:
            probabilities = np.stack([seg.probabilities for seg in segs
                                      if seg.probabilities is not None])
            data = (probabilities if name == "probabilities" else
                    np.rint(probabilities.max(axis=1).astype(np.float32) * 255).astype(np.uint8))
        datatype = "FP16" if name == "probabilities" else "UINT8"
        tensors.append(oip.Tensor(name, datatype, list(data.shape), data))
    return tensors


async def _segment_all(runtime: Runtime, version: ModelVersion,
                       images: list[bytes | np.ndarray], started: float,
                       probabilities: bool) -> list[Segmented]:
    outcomes = await asyncio.gather(*(runtime.segment(version, image, started,
                                                      probabilities=probabilities)
                                      for image in images), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [o for o in outcomes if isinstance(o, Segmented)]


@router.post("/models/{name}/infer", **INFER)
async def infer(request: Request, name: ModelName, registry: RegistryDep, runtime: RuntimeDep,
                settings: SettingsDep) -> Response:
    """Segment the request's images with the model's serving version (JSON or binary
    tensors)."""
    return await _infer(request, name, None, registry, runtime, settings)


@router.post("/models/{name}/versions/{version}/infer", **INFER)
async def infer_version(request: Request, name: ModelName, version: VersionText,
                        registry: RegistryDep, runtime: RuntimeDep,
                        settings: SettingsDep) -> Response:
    """The same with one version of the model."""
    return await _infer(request, name, _version_number(version), registry, runtime, settings)
