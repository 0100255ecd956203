"""The Open Inference Protocol routes in process (stock clients: tests/e2e/test_v2_clients.py)."""

import asyncio
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from app.main import create_app
from tests.support.service import (
    GatedVersion,
    entered,
    image_bytes,
    make_settings,
    post_image,
    queued,
    running_client,
    serving,
)
from tests.tiny import CLASSES


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


async def mask_of_upload(client, data: bytes) -> np.ndarray:
    r = await post_image(client, data, fmt="png")
    return np.asarray(Image.open(io.BytesIO(r.content)))


def image_request(batch: np.ndarray, binary: bool = False) -> tuple[bytes, dict]:
    tensor = {"name": "image", "datatype": "UINT8", "shape": list(batch.shape)}
    if not binary:
        doc = {"inputs": [tensor | {"data": batch.ravel().tolist()}]}
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    tensor["parameters"] = {"binary_data_size": batch.nbytes}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return head + batch.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def mask_from(response) -> np.ndarray:
    length = response.headers.get("inference-header-content-length")
    if length is None:
        (out,) = response.json()["outputs"]
        return np.asarray(out["data"], np.uint8).reshape(out["shape"])
    (out,) = json.loads(response.content[:int(length)])["outputs"]
    return np.frombuffer(response.content[int(length):], np.uint8).reshape(out["shape"])


@pytest.mark.parametrize("binary", [False, True])
async def test_infer_masks_equal_the_upload_routes(client, binary):
    uploads = [image_bytes(40, 24, seed=seed) for seed in (1, 2)]
    batch = np.stack([pixels(data) for data in uploads])
    body, headers = image_request(batch, binary)
    r = await client.post("/v2/models/tiny/infer", content=body, headers=headers)
    expected = np.stack([await mask_of_upload(client, data) for data in uploads])
    assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    assert np.array_equal(mask_from(r), expected)


async def test_encoded_files_go_through_the_upload_decoder(client):
    uploads = [image_bytes(30, 20, seed=3, fmt="JPEG"), image_bytes(30, 20, seed=4)]
    blob = b"".join(len(d).to_bytes(4, "little") + d for d in uploads)
    head = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    r = await client.post("/v2/models/tiny/versions/1/infer", content=head + blob,
                          headers={"Inference-Header-Content-Length": str(len(head))})
    expected = np.stack([await mask_of_upload(client, data) for data in uploads])
    assert r.status_code == 200 and np.array_equal(mask_from(r), expected)


async def test_metadata_describes_variable_dims_and_the_classes(client):
    server = (await client.get("/v2")).json()
    model = (await client.get("/v2/models/tiny")).json()
    version = (await client.get("/v2/models/tiny/versions/1")).json()
    assert "binary_tensor_data" in server["extensions"]
    assert model["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}
    assert model["outputs"] == [
        {"name": "mask", "datatype": "UINT8", "shape": [-1, -1, -1]},
        {"name": "probabilities", "datatype": "FP16", "shape": [-1, len(CLASSES), -1, -1]},
        {"name": "confidence", "datatype": "UINT8", "shape": [-1, -1, -1]}]
    assert model["versions"] == ["1"] and model["parameters"]["classes"] == CLASSES
    assert version["versions"] == ["1"]


async def test_health_and_readiness_answer_with_their_bodies(client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2/models/tiny/ready")).json()["ready"] is True
    assert (await client.get("/v2/models/tiny/versions/1/ready")).status_code == 200
    assert (await client.get("/v2/models/tiny/versions/2/ready")).status_code == 404


@pytest.mark.parametrize(("doc", "status", "message"), [
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 100000, 100000, 3],
                  "data": [0]}]}, 413, "tensor_too_large"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2000, 200, 3],
                  "data": [0]}]}, 413, "too_many_pixels"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 2, 2], "data": [0] * 4}]},
     400, "must have shape [N, H, W, 3]"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3],
                  "data": [0, 0, 0]}], "outputs": [{"name": "logits"}]}, 400,
     "unknown output 'logits'"),
    ({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                  "data": ["bm90IGFuIGltYWdl"]}]}, 400, "invalid_image"),
    ({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                  "data": [base64.b64encode(image_bytes(fmt="TIFF")).decode()]}]}, 415,
     "unsupported_format"),
])
async def test_bad_requests_get_the_protocol_error_shape(client, doc, status, message):
    r = await client.post("/v2/models/tiny/infer", json=doc)
    documented = (await client.get("/openapi.json")).json()["paths"]["/v2/models/{name}/infer"]
    assert r.status_code == status and set(r.json()) == {"error"}
    assert message in r.json()["error"]
    assert str(status) in documented["post"]["responses"]


async def test_unknown_model_is_404_in_the_protocol_shape(client):
    r = await client.post("/v2/models/nope/infer", json={"inputs": [
        {"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [0, 0, 0]}]})
    assert r.status_code == 404 and r.json()["error"].startswith("model_not_found: ")


async def test_images_of_different_sizes_in_one_request_are_refused(client):
    uploads = [image_bytes(10, 10), image_bytes(12, 10)]
    body = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                                   "data": [base64.b64encode(d).decode() for d in uploads]}]})
    r = await client.post("/v2/models/tiny/infer", content=body)
    assert r.status_code == 400 and "must share a size" in r.json()["error"]


async def test_v2_requests_are_batched_with_each_other(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_batch_size=4), factory=GatedVersion)
    async with running_client(app) as client:
        version = serving(app)
        blocker = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        await entered(version)
        batch = np.stack([pixels(image_bytes(16, 16, seed=s)) for s in range(3)])
        body, headers = image_request(batch)
        infer = asyncio.create_task(client.post("/v2/models/tiny/infer", content=body,
                                                headers=headers))
        await queued(app, 3)
        version.gate.set()
        await blocker
        r = await infer
    assert r.status_code == 200 and version.batches[-1] == [(16, 16)] * 3


def outputs_of(response) -> dict[str, np.ndarray]:
    length = int(response.headers["inference-header-content-length"])
    doc, blob = json.loads(response.content[:length]), response.content[length:]
    found, offset = {}, 0
    for out in doc["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = np.float16 if out["datatype"] == "FP16" else np.uint8
        found[out["name"]] = np.frombuffer(blob[offset:offset + size], dtype).reshape(
            out["shape"])
        offset += size
    return found


@pytest.mark.parametrize("size", [(40, 24), (100, 70)], ids=["whole", "tiled"])
async def test_probabilities_and_confidence_agree_with_the_mask(client, size):
    upload = image_bytes(*size, seed=9)
    batch = pixels(upload)[None]
    head = json.dumps({
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": list(batch.shape),
                    "parameters": {"binary_data_size": batch.nbytes}}],
        "outputs": [{"name": n, "parameters": {"binary_data": True}}
                    for n in ("mask", "probabilities", "confidence")]}).encode()
    r = await client.post("/v2/models/tiny/infer", content=head + batch.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(head))})
    out = outputs_of(r)
    probabilities = out["probabilities"].astype(np.float32)
    assert probabilities.shape == (1, len(CLASSES), size[1], size[0])
    assert np.allclose(probabilities.sum(axis=1), 1, atol=3e-3)
    assert np.array_equal(out["mask"][0], await mask_of_upload(client, upload))
    assert np.array_equal(out["confidence"],
                          np.rint(probabilities.max(axis=1) * 255).astype(np.uint8))
    # float16 can tie near-equal classes; where it does not, the mask is the argmax
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-2
    assert np.array_equal(probabilities.argmax(axis=1)[clear], out["mask"][clear])


async def test_probabilities_above_the_pixel_budget_are_refused(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_probability_pixels=100))
    async with running_client(app) as client:
        doc = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 10, 11, 3],
                           "data": [0] * 330}], "outputs": [{"name": "confidence"}]}
        refused = await client.post("/v2/models/tiny/infer", json=doc)
        doc["outputs"] = [{"name": "mask"}]
        mask_only = await client.post("/v2/models/tiny/infer", json=doc)
    assert refused.status_code == 413 and "DECONVSEG_MAX_PROBABILITY_PIXELS" in refused.text
    assert mask_only.status_code == 200
