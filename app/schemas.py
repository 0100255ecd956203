"""Response models and documented errors for the OpenAPI schema (with examples)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.formats import ALLOWED_TEXT


class ErrorDetail(BaseModel):
    code: str = Field(examples=["too_many_pixels"])
    message: str = Field(examples=["the image is 20000×20000 = 400,000,000 pixels; the limit is "
                                   "40,000,000 pixels (40 MP); send a smaller image"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


# status → (code, when): the error table, shown per route in the OpenAPI document.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("empty_file | invalid_image | invalid_tensor | invalid_include | bad_request | "
          "load_failed",
          "the upload is empty, not an image, truncated or corrupt, the body is malformed, or "
          "`include` names an unknown output or is used with png, npy or overlay; for a "
          "model load, the version that failed and why"),
    401: ("unauthorized", "the route needs a key (DECONVSEG_API_KEY, or DECONVSEG_ADMIN_KEY "
                          "for model control) and the request lacks it"),
    404: ("model_not_found | version_not_found", "no such model or version in the repository"),
    409: ("load_in_progress | too_many_versions",
          "the model is already being loaded, or DECONVSEG_MAX_LOADED_VERSIONS would be passed"),
    413: ("payload_too_large | too_many_pixels | side_too_long | too_many_files | "
          "tensor_too_large | too_many_pixels_for_probabilities",
          "body over DECONVSEG_MAX_UPLOAD_BYTES, image over DECONVSEG_MAX_PIXELS, a side over "
          "DECONVSEG_MAX_SIDE, or more files than DECONVSEG_MAX_BATCH_FILES"),
    415: ("unsupported_format", f"a format other than {ALLOWED_TEXT}"),
    422: ("invalid_request", "the multipart field 'file' is missing or a query value is invalid"),
    500: ("inference_failed | internal_error", "a server fault; never caused by client input"),
    503: ("queue_full | not_ready | model_not_ready",
          "queue full, warming up, shutting down, or the model has no version that can serve "
          "(loading, unloaded or failed); see Retry-After"),
    504: ("deadline_exceeded", "not segmented within DECONVSEG_REQUEST_TIMEOUT_S"),
}


class ProtocolError(BaseModel):
    """The Open Inference Protocol's error shape, used under /v2: our code, then the message."""

    error: str = Field(examples=["model_not_found: no model named 'roads' (models: model)"])


def error_responses(*statuses: int, protocol: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, each with the error model and an example
    (`protocol`: the /v2 shape)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, when = ERRORS[status]
        first = code.split(" | ")[0]
        example: dict[str, Any] = ({"error": f"{first}: {when}"} if protocol else
                                   {"error": {"code": first, "message": when}})
        out[status] = {"model": ProtocolError if protocol else ErrorResponse,
                       "description": f"`{code}`: {when}",
                       "content": {"application/json": {"example": example}}}
    return out


class EncodedMask(BaseModel):
    encoding: str = Field("png", examples=["png"])
    data: str = Field(description="base64 PNG, one band, pixel value = class index",
                      examples=["iVBORw0KGgoAAAANSUhEUgAA…"])


class ModelRef(BaseModel):
    name: str = Field(examples=["model"])
    version: int = Field(examples=[1])
    sha256: str = Field(examples=["3f2a9c…"])


class Timings(BaseModel):
    decode: float = Field(description="ms to decode and preprocess", examples=[2.1])
    queue: float = Field(description="ms waiting for a batch", examples=[0.4])
    inference: float = Field(description="ms of the model call (whole batch)", examples=[38.0])
    encode: float = Field(description="ms to encode the response", examples=[1.2])


class EncodedImage(BaseModel):
    encoding: str = Field("png", examples=["png"])
    data: str = Field(description="base64 one-band 8-bit PNG: the winning class's softmax "
                                  "probability × 255, rounded", examples=["iVBORw0KGgoAAAANSU…"])


class EncodedArray(BaseModel):
    encoding: str = Field("npy", examples=["npy"])
    dtype: str = Field(examples=["float16"])
    shape: list[int] = Field(description="[classes, height, width]", examples=[[3, 480, 640]])
    data: str = Field(description="base64 .npy file (numpy.load reads it)",
                      examples=["k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywg…"])


class PolygonGeometry(BaseModel):
    """A GeoJSON Polygon in pixel coordinates: (0, 0) is the image's top-left corner, x right,
    y down; the exterior ring first, then the holes; rings closed, exterior counter-clockwise by
    signed area (RFC 7946)."""

    type: Literal["Polygon"] = "Polygon"
    coordinates: list[list[list[float]]] = Field(
        examples=[[[[10.25, 10.25], [20.75, 10.25], [20.75, 20.75], [10.25, 20.75],
                    [10.25, 10.25]]]])


class ObjectProperties(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class", examples=["disc"])
    index: int = Field(description="the class index", examples=[1])
    area: int = Field(description="pixels", examples=[113])
    bbox: list[int] = Field(description="[x, y, width, height] in pixels",
                            examples=[[10, 10, 11, 11]])
    centroid: list[float] = Field(description="[x, y]: the mean of its pixels' centres",
                                  examples=[[15.5, 15.5]])
    score: float | None = Field(description="mean confidence over its pixels, 0–1",
                                examples=[0.93])


class SegmentObject(ObjectProperties):
    """One connected component (8-connected) of one class."""

    polygon: PolygonGeometry


class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    geometry: PolygonGeometry
    properties: ObjectProperties


CONFIDENCE_FIELD = Field(None, description="include=confidence")
PROBABILITIES_FIELD = Field(None, description="include=probabilities")
OBJECTS_FIELD = Field(None, description="include=objects: the objects, in reading order of "
                                        "their boxes")

SEGMENT_EXAMPLE: dict[str, Any] = {
    "width": 640, "height": 480, "classes": ["background", "disc", "square"],
    "mask": {"encoding": "png", "data": "iVBORw0KGgo…"},
    "areas": {"background": 0.81, "disc": 0.12, "square": 0.07},
    "model": {"name": "model", "version": 1, "sha256": "3f2a9c…"},
    "timings_ms": {"decode": 2.1, "queue": 0.4, "inference": 38.0, "encode": 1.2}}


class SegmentResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEGMENT_EXAMPLE]})

    width: int
    height: int
    classes: list[str]
    mask: EncodedMask
    confidence: EncodedImage | None = CONFIDENCE_FIELD
    probabilities: EncodedArray | None = PROBABILITIES_FIELD
    objects: list[SegmentObject] | None = OBJECTS_FIELD
    areas: dict[str, float] = Field(description="fraction of pixels per class")
    model: ModelRef
    timings_ms: Timings


class ObjectsResponse(BaseModel):
    """format=objects: the objects without the mask."""

    width: int
    height: int
    classes: list[str]
    confidence: EncodedImage | None = CONFIDENCE_FIELD
    probabilities: EncodedArray | None = PROBABILITIES_FIELD
    objects: list[SegmentObject]
    areas: dict[str, float]
    model: ModelRef
    timings_ms: Timings


class GeoJSONResponse(BaseModel):
    """format=geojson: a FeatureCollection of the objects (width, height, model and what
    `include` adds are foreign members)."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature]
    width: int
    height: int
    confidence: EncodedImage | None = CONFIDENCE_FIELD
    probabilities: EncodedArray | None = PROBABILITIES_FIELD
    model: ModelRef


class RLEMask(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class", examples=["disc"])
    index: int = Field(examples=[1])
    size: list[int] = Field(description="[height, width]", examples=[[480, 640]])
    counts: str | list[int] = Field(
        description="COCO RLE, column-major runs starting with zeros: pycocotools' compressed "
                    "string (the default), or with rle=uncompressed the run lengths",
        examples=["PlT11d?1N2M2N1O1O001O0O2N2M3Mbe0"])


class RLEResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "width": 640, "height": 480, "classes": ["background", "disc"],
        "rle": [{"class": "disc", "index": 1, "size": [480, 640],
                 "counts": "PlT11d?1N2M2N1O1O001O0O2N2M3Mbe0"}],
        "areas": {"background": 0.88, "disc": 0.12},
        "model": {"name": "model", "version": 1, "sha256": "3f2a9c…"},
        "timings_ms": {"decode": 2.1, "queue": 0.4, "inference": 38.0, "encode": 1.2}}]})

    width: int
    height: int
    classes: list[str]
    rle: list[RLEMask] = Field(description="one entry per class present in the mask")
    confidence: EncodedImage | None = CONFIDENCE_FIELD
    probabilities: EncodedArray | None = PROBABILITIES_FIELD
    objects: list[SegmentObject] | None = OBJECTS_FIELD
    areas: dict[str, float]
    model: ModelRef
    timings_ms: Timings


class BatchItem(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"filename": "a.png", "status": 200, "result": SEGMENT_EXAMPLE},
        {"filename": "notes.txt", "status": 400, "error": {
            "code": "invalid_image",
            "message": f"the file is not a readable image; send {ALLOWED_TEXT}"}}]})

    filename: str | None = None
    status: int = Field(description="the status this image alone would have had")
    result: SegmentResponse | RLEResponse | ObjectsResponse | GeoJSONResponse | None = None
    error: ErrorDetail | None = None


class Health(BaseModel):
    status: str = Field(examples=["ready"])


class ModelCard(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "model", "version": 1, "sha256": "3f2a9c…", "classes": ["background", "disc"],
        "palette": [[0, 0, 0], [230, 25, 75]],
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "input_policy": {"formats": ["JPEG", "PNG", "WEBP", "BMP", "GIF"],
                         "resolution": "native", "tile_size": 768, "tile_overlap": 64,
                         "max_upload_bytes": 20971520, "max_pixels": 40000000},
        "train_size": 256, "object_scale": [0.08, 0.3], "metrics": {"val_miou": 0.81},
        "training": {"epochs": 16}, "architecture": {"widths": [16, 32, 64, 96, 128]},
        "batching": {"max_batch_size": 8, "max_batch_delay_ms": 5.0, "max_queue": 64,
                     "request_timeout_s": 30.0, "forward": "per_item"},
        "versions": {"torch": "2.14.1"}, "device": "cpu"}]})

    name: str
    version: int
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
    backend: str = Field(description="fp32 or bf16", examples=["bf16"])
    engine: str = Field(description="torchscript (frozen), eager or onnxruntime",
                        examples=["torchscript"])


class VersionStatus(BaseModel):
    version: int
    state: str = Field(description="loading, ready, unloading or unavailable",
                       examples=["ready"])
    reason: str | None = Field(None, description="why it is not ready",
                               examples=["models/seg/3/model.pt: truncated or corrupt (…)"])


class ModelStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "model", "default": True, "serving_version": 2, "problems": [],
        "versions": [{"version": 1, "state": "unavailable", "reason": "unloaded"},
                     {"version": 2, "state": "ready"}]}]})

    name: str
    default: bool = Field(description="the model /segment and /model use")
    serving_version: int | None = Field(description="the version /models/{name}/segment uses")
    problems: list[str] = Field(description="repository mistakes in this model's folder")
    versions: list[VersionStatus]


class IndexEntry(BaseModel):
    name: str
    version: int
    state: str
    reason: str | None = None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its definitions inlined (for `openapi_extra`, which takes a
    schema that cannot point into the document's components)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


class V2Tensor(BaseModel):
    name: str = Field(examples=["image"], description="image (UINT8) or image_bytes (BYTES)")
    datatype: str = Field(examples=["UINT8"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[1, 2, 2, 3]])
    data: list[Any] | None = Field(None, description="row-major elements (BYTES: base64); "
                                   "absent when parameters.binary_data_size is set",
                                   examples=[[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]])
    parameters: dict[str, Any] | None = None


class V2Output(BaseModel):
    name: str = Field(examples=["mask"], description="mask, probabilities or confidence")
    parameters: dict[str, Any] | None = Field(None, examples=[{"binary_data": True}])


class V2InferRequest(BaseModel):
    """The JSON form; with the binary extension, this JSON comes first and its byte length is
    in the Inference-Header-Content-Length header."""

    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1,
                                   description="one input: image or image_bytes")
    outputs: list[V2Output] | None = None
    parameters: dict[str, Any] | None = None
