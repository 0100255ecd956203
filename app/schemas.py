"""Response models for the OpenAPI docs (with examples)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(examples=["too_many_pixels"])
    message: str = Field(examples=["the image is 20000×20000 = 400,000,000 pixels; the limit is "
                                   "40,000,000"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class EncodedMask(BaseModel):
    encoding: str = Field("png", examples=["png"])
    data: str = Field(description="base64 PNG, one band, pixel value = class index",
                      examples=["iVBORw0KGgoAAAANSUhEUgAA…"])


class ModelRef(BaseModel):
    name: str = Field(examples=["model"])
    sha256: str = Field(examples=["3f2a…"])


class Timings(BaseModel):
    decode: float = Field(description="ms to decode and preprocess", examples=[2.1])
    queue: float = Field(description="ms waiting for a batch", examples=[0.4])
    inference: float = Field(description="ms of the model call (whole batch)", examples=[38.0])
    encode: float = Field(description="ms to encode the response", examples=[1.2])


class SegmentResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "width": 640, "height": 480, "classes": ["background", "disc", "square"],
        "mask": {"encoding": "png", "data": "iVBORw0KGgo…"},
        "areas": {"background": 0.81, "disc": 0.12, "square": 0.07},
        "model": {"name": "model", "sha256": "3f2a…"},
        "timings_ms": {"decode": 2.1, "queue": 0.4, "inference": 38.0, "encode": 1.2}}]})

    width: int
    height: int
    classes: list[str]
    mask: EncodedMask
    areas: dict[str, float] = Field(description="fraction of pixels per class")
    model: ModelRef
    timings_ms: Timings


class RLEMask(BaseModel):
    class_: str = Field(alias="class", examples=["disc"])
    index: int = Field(examples=[1])
    size: list[int] = Field(description="[height, width]", examples=[[480, 640]])
    counts: list[int] = Field(description="COCO uncompressed RLE, column-major, zeros first",
                              examples=[[1200, 35, 445, 40]])


class RLEResponse(BaseModel):
    width: int
    height: int
    classes: list[str]
    rle: list[RLEMask]
    areas: dict[str, float]
    model: ModelRef
    timings_ms: Timings


class BatchItem(BaseModel):
    filename: str | None = None
    result: SegmentResponse | None = None
    error: ErrorDetail | None = None


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class ModelCard(BaseModel):
    name: str
    sha256: str
    classes: list[str]
    palette: list[list[int]]
    normalization: dict[str, list[float]]
    input_policy: dict[str, Any]
    train_size: int
    object_scale: list[float]
    metrics: dict[str, Any]
    training: dict[str, Any]
    architecture: dict[str, Any]
    batching: dict[str, Any]
    versions: dict[str, str]
    device: str
