import json
import struct

import numpy as np
import pytest

from app import oip
from app.errors import InvalidInput, TooLarge

SPECS = {"image": oip.InputSpec("UINT8", 1000), "image_bytes": oip.InputSpec("BYTES", 4)}


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), str(len(head))


def test_json_tensor_is_read_in_row_major_order():
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 1, 3],
                                   "data": [1, 2, 3, 4, 5, 6]}]}).encode()
    request = oip.parse_request(body, None, SPECS)
    assert request.inputs["image"].data.tolist() == [[[[1, 2, 3]], [[4, 5, 6]]]]
    assert request.outputs is None and not request.binary("mask")


def test_binary_tensor_follows_the_json_header():
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    body, length = binary_body({"inputs": [{"name": "image", "datatype": "UINT8",
                                            "shape": [1, 2, 2, 3],
                                            "parameters": {"binary_data_size": 12}}],
                                "outputs": [{"name": "mask",
                                             "parameters": {"binary_data": True}}]},
                               pixels.tobytes())
    request = oip.parse_request(body, length, SPECS)
    assert np.array_equal(request.inputs["image"].data, pixels)
    assert request.outputs == ["mask"] and request.binary("mask")


def test_binary_bytes_elements_are_length_prefixed():
    blob = b"".join(struct.pack("<I", len(x)) + x for x in (b"png1", b"jpeg-two"))
    body, length = binary_body({"inputs": [{"name": "image_bytes", "datatype": "BYTES",
                                            "shape": [2],
                                            "parameters": {"binary_data_size": len(blob)}}]},
                               blob)
    assert oip.parse_request(body, length, SPECS).inputs["image_bytes"].data == [b"png1",
                                                                               b"jpeg-two"]


def test_json_bytes_elements_are_base64():
    body = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                   "data": ["aGVsbG8="]}]}).encode()
    assert oip.parse_request(body, None, SPECS).inputs["image_bytes"].data == [b"hello"]


def test_a_shape_over_the_budget_is_refused_before_reading_data():
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8",
                                   "shape": [1, 100000, 100000, 3], "data": [0]}]}).encode()
    with pytest.raises(TooLarge, match="30,000,000,000 elements; the limit is 1,000"):
        oip.parse_request(body, None, SPECS)


def test_the_shape_check_runs_before_the_data_is_read():
    seen = []
    specs = {"image": oip.InputSpec("UINT8", 10**12, check_shape=seen.append)}
    body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                                   "data": "not a list"}]}).encode()
    with pytest.raises(InvalidInput):
        oip.parse_request(body, None, specs)
    assert seen == [[1, 1, 1, 3]]


@pytest.mark.parametrize(("header", "blob", "length", "message"), [
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                  "parameters": {"binary_data_size": 3}}]}, b"\0\0", None,
     "does not fit"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 2, 3],
                  "parameters": {"binary_data_size": 3}}]}, b"\0\0\0", None,
     "3 bytes for 6 UINT8 values"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                  "parameters": {"binary_data_size": 3}}]}, b"\0\0\0\0", None,
     "1 bytes after the JSON header belong to no input"),
    ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [0]}]}, b"",
     None, "must be UINT8, not FP32"),
    ({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1], "data": [0]}]}, b"",
     None, "unknown input 'pixels'"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                  "data": [1, 2]}]}, b"", None, "2 values for a shape of 3"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1], "data": []}]}, b"",
     None, "non-negative integers"),
    ({"inputs": []}, b"", None, "non-empty 'inputs'"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [0] * 3,
                  "parameters": [None, None]}]}, b"", None,
     "input 'image': 'parameters' must be an object"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [0] * 3}],
      "parameters": "binary"}, b"", None, "the inference request: 'parameters' must be"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [0] * 3}],
      "outputs": [{"name": "mask", "parameters": 1}]}, b"", None,
     "output 'mask': 'parameters' must be an object"),
    ({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": 6}}]}, b"\x09\0\0\0ab", None,
     "claims 9 bytes past the data"),
])
def test_malformed_requests_name_the_problem(header, blob, length, message):
    body, header_length = binary_body(header, blob)
    with pytest.raises(InvalidInput, match=message):
        oip.parse_request(body, length or header_length, SPECS)


@pytest.mark.parametrize(("length", "message"), [("x", "is not a number"),
                                                 ("999", "but the body has")])
def test_a_bad_header_length_is_refused(length, message):
    with pytest.raises(InvalidInput, match=message):
        oip.parse_request(b"{}", length, SPECS)


def test_not_json_is_refused():
    with pytest.raises(InvalidInput, match="not valid JSON"):
        oip.parse_request(b"\xff\xfe", None, SPECS)


def test_binary_outputs_follow_the_json_header_with_their_size():
    mask = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    request = oip.InferRequest("7", {}, ["mask"], binary_outputs={"mask"})
    body, headers = oip.encode_response("seg", "2", request,
                                        [oip.Tensor("mask", "UINT8", [1, 2, 3], mask)])
    length = int(headers[oip.HEADER])
    doc = json.loads(body[:length])
    assert doc == {"model_name": "seg", "model_version": "2", "id": "7",
                   "outputs": [{"name": "mask", "datatype": "UINT8", "shape": [1, 2, 3],
                                "parameters": {"binary_data_size": 6}}]}
    assert body[length:] == mask.tobytes()
    assert headers["Content-Type"] == "application/octet-stream"


def test_json_outputs_carry_their_data_flat():
    mask = np.arange(4, dtype=np.uint8).reshape(1, 2, 2)
    body, headers = oip.encode_response("seg", "1", oip.InferRequest(None, {}, None),
                                        [oip.Tensor("mask", "UINT8", [1, 2, 2], mask)])
    assert json.loads(body)["outputs"][0]["data"] == [0, 1, 2, 3]
    assert oip.HEADER not in headers and headers["Content-Type"] == "application/json"
