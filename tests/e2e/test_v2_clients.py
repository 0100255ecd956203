"""Stock Open Inference Protocol clients against a real server: tritonclient (binary and JSON
tensors) and the kserve SDK's InferenceRESTClient get the masks `/segment` gives."""

import asyncio
import io

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from PIL import Image

from tests.support.server import start_server, stop
from tests.support.service import image_bytes

pytestmark = pytest.mark.slow
ADMIN = "e2e-admin"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("v2") / "server.log"
    proc, base = start_server({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint),
                               "DECONVSEG_THREADS": "1", "DECONVSEG_ADMIN_KEY": ADMIN}, log=log)
    try:
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def uploads():
    return [image_bytes(64, 40, seed=seed) for seed in (5, 6)]


@pytest.fixture(scope="module")
def expected(server, uploads) -> np.ndarray:
    """The masks POST /segment returns for the uploads, as one (N, H, W) array."""
    masks = []
    for data in uploads:
        r = httpx.post(f"{server}/segment?format=png", files={"file": ("a.png", data)})
        masks.append(np.asarray(Image.open(io.BytesIO(r.content))))
    return np.stack(masks)


def rgb(uploads) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(d)).convert("RGB")) for d in uploads])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_the_upload_masks(server, uploads, expected, binary):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    batch = rgb(uploads)
    tensor = triton.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    result = client.infer("tiny", [tensor],
                          outputs=[triton.InferRequestedOutput("mask", binary_data=binary)])
    assert client.is_server_ready() and client.is_model_ready("tiny")
    assert result.get_response()["model_version"] == "1"
    assert np.array_equal(result.as_numpy("mask"), expected)


def test_tritonclient_sends_encoded_files_as_bytes(server, uploads, expected):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    tensor = triton.InferInput("image_bytes", [len(uploads)], "BYTES")
    tensor.set_data_from_numpy(np.array(uploads, dtype=object), binary_data=True)
    result = client.infer("tiny", [tensor], model_version="1")
    assert np.array_equal(result.as_numpy("mask"), expected)


def test_tritonclient_reads_the_protocol_error(server):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    tensor = triton.InferInput("image", [1, 2, 2, 3], "UINT8")
    tensor.set_data_from_numpy(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(triton.InferenceServerException, match="model_not_found") as info:
        client.infer("nope", [tensor])
    assert info.value.status() == "404"


def test_kserve_rest_client_gets_the_upload_masks(server, uploads, expected):
    async def infer():
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        batch = rgb(uploads)
        tensor = InferInput("image", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch, binary_data=True)
        ready = await client.is_server_ready(server)
        response = await client.infer(server, InferRequest("tiny", [tensor]), model_name="tiny")
        return ready, response.outputs[0].as_numpy()

    ready, mask = asyncio.run(infer())
    assert ready is True and np.array_equal(mask, expected)


def test_tritonclient_model_control_speaks_the_repository_extension(server):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    headers = {"X-Admin-Key": ADMIN}
    client.unload_model("tiny", headers=headers)
    unloaded = client.is_model_ready("tiny")
    client.load_model("tiny", headers=headers)
    index = client.get_model_repository_index(headers=headers)
    assert unloaded is False and client.is_model_ready("tiny")
    assert index == [{"name": "tiny", "version": 1, "state": "ready", "reason": None}]
    with pytest.raises(triton.InferenceServerException, match="admin key"):
        client.load_model("tiny")
