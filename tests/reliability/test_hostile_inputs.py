"""Every corpus case gets its exact status and code, and the server still serves afterwards."""

import tracemalloc

import pytest
from PIL import ImageFile

from app.main import create_app
from tests.reliability.corpus import CORPUS, file_part
from tests.support.service import image_bytes, make_settings, post_image, running_client

SIZE_CASES = [case for case in CORPUS if case.status == 413 and case.name.startswith("png_")]


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
async def test_hostile_request_gets_its_exact_error_and_a_good_one_still_succeeds(client, case):
    request = case.build()
    r = await client.post(request.path, content=request.body, headers=request.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (case.status, case.code), r.text
    assert (await post_image(client, image_bytes())).status_code == 200


@pytest.mark.parametrize("case", SIZE_CASES, ids=lambda case: case.name)
async def test_size_limits_refuse_from_the_header_without_decoding_pixels(client, case,
                                                                          monkeypatch):
    def never(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    request = case.build()
    r = await client.post(request.path, content=request.body, headers=request.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (413, case.code)


async def test_chunked_body_over_the_limit_is_cut_off_with_flat_memory(tiny_checkpoint):
    limit, chunk, offered = 1_000_000, 64 * 1024, 64 * 1024 * 1024
    pulled = 0

    async def body():
        nonlocal pulled
        yield b"--x\r\n" + file_part(b"", "big.png")
        for _ in range(offered // chunk):
            pulled += chunk
            yield b"\0" * chunk

    app = create_app(make_settings(tiny_checkpoint, max_upload_bytes=limit))
    async with running_client(app) as client:
        tracemalloc.start()
        try:
            r = await client.post("/segment", content=body(),
                                  headers={"content-type": "multipart/form-data; boundary=x"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert pulled <= limit + chunk  # the server stopped reading at the limit, of 64 MB offered
    assert peak < 4 * limit  # Python allocations while streaming stay within a few chunks
