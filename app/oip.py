"""Open Inference Protocol ("v2", KServe and Triton) REST tensors: the JSON form and Triton's
binary-data extension, both directions. Pure codec: no HTTP, no model.

JSON: `{"inputs": [{"name", "datatype", "shape", "data"}], "outputs": [{"name", "parameters"}]}`
with `data` the tensor's elements in row-major order (flat or nested). Binary extension: the
JSON header's byte length is in the `Inference-Header-Content-Length` header; an input whose
`parameters.binary_data_size` is set has no `data` and its raw little-endian bytes follow the
header, in input order. BYTES elements are each a 4-byte little-endian length, then the bytes.
Outputs come back the same way when asked (`outputs[].parameters.binary_data`, or the request's
`parameters.binary_data_output`).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import InvalidInput, TooLarge

HEADER = "Inference-Header-Content-Length"
NUMERIC: dict[str, np.dtype] = {name: np.dtype(kind) for name, kind in {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}.items()}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]  # BYTES: one bytes object per element


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[str] | None  # the outputs asked for; None: the model's default
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False

    def binary(self, name: str) -> bool:
        return name in self.binary_outputs or self.binary_default


@dataclass
class InputSpec:
    """What the caller accepts for one input, checked from the shape before any tensor is
    allocated: the datatype, an element budget and any further check of the shape."""

    datatype: str
    max_elements: int
    check_shape: Callable[[list[int]], None] = lambda _: None


def _bad(message: str) -> InvalidInput:
    return InvalidInput("invalid_tensor", message)


def _parameters(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`raw`'s "parameters" object ({} when absent or null)."""
    params = raw.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad(f"{where}: 'parameters' must be an object")
    return params


def _header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        json_part, rest = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise _bad(f"{HEADER} is not a number: {header_length!r}") from None
        if not 0 < length <= len(body):
            raise _bad(f"{HEADER} is {length}, but the body has {len(body)} bytes")
        json_part, rest = body[:length], memoryview(body)[length:]
    try:
        doc = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"the inference request is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise _bad("the inference request needs a non-empty 'inputs' list")
    return doc, rest


def _shape(raw: dict[str, Any], name: str) -> list[int]:
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(f"input '{name}': 'shape' must be a list of non-negative integers")
    return shape


def _bytes_elements(buffer: memoryview, count: int, name: str) -> list[bytes]:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(buffer):
            raise _bad(f"input '{name}': BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", buffer, pos)
        if pos + 4 + size > len(buffer):
            raise _bad(f"input '{name}': a BYTES element claims {size} bytes past the data")
        out.append(bytes(buffer[pos + 4:pos + 4 + size]))
        pos += 4 + size
    if pos != len(buffer):
        raise _bad(f"input '{name}': {len(buffer) - pos} bytes after the last BYTES element")
    return out


def _json_elements(data: Any, datatype: str, count: int, name: str) -> np.ndarray | list[bytes]:
    flat = np.asarray(data, dtype=object).ravel() if datatype == "BYTES" else None
    if flat is not None:
        if flat.size != count or not all(isinstance(x, str) for x in flat):
            raise _bad(f"input '{name}': BYTES data must be {count} base64 strings")
        try:
            return [base64.b64decode(x, validate=True) for x in flat]
        except ValueError:
            raise _bad(f"input '{name}': BYTES elements in JSON must be base64") from None
    try:
        array = np.asarray(data, dtype=NUMERIC[datatype])
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"input '{name}': 'data' is not a list of {datatype} values") from None
    if array.size != count:
        raise _bad(f"input '{name}': {array.size} values for a shape of {count}")
    return array


def parse_request(body: bytes, header_length: str | None,
                  specs: dict[str, InputSpec]) -> InferRequest:
    """Parse and check an inference request; each input must be one of `specs`, of its
    datatype and within its element budget (checked from the shape, before allocating)."""
    doc, rest = _header(body, header_length)
    inputs: dict[str, Tensor] = {}
    offset = 0
    for raw in doc["inputs"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise _bad("every input needs a 'name'")
        name = raw["name"]
        spec = specs.get(name)
        if spec is None:
            raise _bad(f"unknown input '{name}'; this model takes {' or '.join(specs)}")
        if raw.get("datatype") != spec.datatype:
            raise _bad(f"input '{name}' must be {spec.datatype}, not {raw.get('datatype')}")
        shape = _shape(raw, name)
        count = math.prod(shape)
        if count > spec.max_elements:
            raise TooLarge("tensor_too_large", f"input '{name}' has shape {shape} = {count:,} "
                           f"elements; the limit is {spec.max_elements:,}")
        spec.check_shape(shape)
        size = _parameters(raw, f"input '{name}'").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise _bad(f"input '{name}': binary_data_size {size!r} does not fit the "
                           f"{len(rest)} bytes after the JSON header")
            chunk = rest[offset:offset + size]
            offset += size
            if spec.datatype == "BYTES":
                data: np.ndarray | list[bytes] = _bytes_elements(chunk, count, name)
            elif size != count * NUMERIC[spec.datatype].itemsize:
                raise _bad(f"input '{name}': {size} bytes for {count} {spec.datatype} values")
            else:
                data = np.frombuffer(chunk, NUMERIC[spec.datatype]).reshape(shape)
        elif "data" in raw:
            data = _json_elements(raw["data"], spec.datatype, count, name)
            if isinstance(data, np.ndarray):
                data = data.reshape(shape)
        else:
            raise _bad(f"input '{name}' has neither 'data' nor binary_data_size")
        inputs[name] = Tensor(name, spec.datatype, shape, data)
    if offset != len(rest):
        raise _bad(f"{len(rest) - offset} bytes after the JSON header belong to no input")
    return _outputs(doc, inputs)


def _outputs(doc: dict[str, Any], inputs: dict[str, Tensor]) -> InferRequest:
    params = _parameters(doc, "the inference request")
    request = InferRequest(str(doc["id"]) if "id" in doc else None, inputs, None,
                           binary_default=bool(params.get("binary_data_output", False)))
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise _bad("'outputs' must be a list")
        request.outputs = []
        for raw in doc["outputs"]:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise _bad("every requested output needs a 'name'")
            request.outputs.append(raw["name"])
            if _parameters(raw, f"output '{raw['name']}'").get("binary_data"):
                request.binary_outputs.add(raw["name"])
    return request


def encode_response(model: str, version: str, request: InferRequest,
                    outputs: list[Tensor]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers; binary outputs follow the JSON header."""
    described, blobs = [], []
    for tensor in outputs:
        assert isinstance(tensor.data, np.ndarray)
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape)}
        if request.binary(tensor.name):
            blob = np.ascontiguousarray(tensor.data, NUMERIC[tensor.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.data.ravel().tolist()
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *blobs]), {HEADER: str(len(header)),
                                        "Content-Type": "application/octet-stream"}
