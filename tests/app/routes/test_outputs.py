"""The outputs of POST /segment beyond the label mask: confidence, probabilities, objects,
GeoJSON, .npy, and gzip for the large bodies."""

import base64
import gzip
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from shapely.geometry import shape
from starlette.requests import Request

from app.errors import InvalidInput
from app.main import create_app
from app.pipeline import Format, Outputs, Segmented
from app.routes.segment import outputs
from app.schemas import GeoJSONResponse, ObjectsResponse, SegmentResponse
from tests.support.service import image_bytes, make_settings, running_client, serving

IMAGE = image_bytes(64, 48, seed=5)


async def post(client, query: str, data: bytes = IMAGE, **kwargs) -> httpx.Response:
    return await client.post(f"/segment?{query}", files={"file": ("x.png", data, "image/png")},
                             **kwargs)


def png_array(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


async def test_confidence_and_probabilities_agree_with_the_mask(client):
    r = await post(client, "include=confidence,probabilities")
    body = SegmentResponse.model_validate(r.json())
    mask = png_array(body.mask.data)
    confidence = png_array(body.confidence.data)
    probabilities = np.load(io.BytesIO(base64.b64decode(body.probabilities.data)))
    assert Image.open(io.BytesIO(base64.b64decode(body.confidence.data))).mode == "L"
    assert probabilities.dtype == np.float16 and list(probabilities.shape) == \
        body.probabilities.shape == [3, 48, 64]
    assert np.allclose(probabilities.astype(np.float32).sum(axis=0), 1, atol=1e-2)
    assert np.array_equal(probabilities.argmax(axis=0), mask)
    top = probabilities.astype(np.float32).max(axis=0)
    assert np.abs(confidence.astype(int) - np.rint(top * 255)).max() <= 1
    assert (top[confidence == 255] >= 254 / 255).all()


async def test_without_include_there_is_no_confidence_probabilities_or_objects(client):
    body = (await post(client, "format=json")).json()
    assert not {"confidence", "probabilities", "objects"} & body.keys()


async def test_probabilities_above_the_pixel_budget_are_413_with_the_setting_named(
        tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_probability_pixels=1000))
    async with running_client(app) as client:
        r = await post(client, "include=probabilities")
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "too_many_pixels_for_probabilities"
        assert "DECONVSEG_MAX_PROBABILITY_PIXELS" in r.json()["error"]["message"]
        assert (await post(client, "include=confidence")).status_code == 200


async def test_objects_format_has_the_objects_and_no_mask(client):
    r = await post(client, "format=objects")
    body = ObjectsResponse.model_validate(r.json())
    assert "mask" not in r.json() and body.objects
    mask = png_array((await post(client, "format=json")).json()["mask"]["data"])
    assert sum(o.area for o in body.objects) == (mask != 0).sum()
    assert all(0 <= o.score <= 1 for o in body.objects)


async def test_json_with_objects_lists_the_same_objects_as_the_objects_format(client):
    with_mask = (await post(client, "format=json&include=objects")).json()["objects"]
    alone = (await post(client, "format=objects")).json()["objects"]
    assert with_mask == alone


async def test_geojson_is_a_collection_of_valid_polygons_with_the_objects_properties(client):
    r = await post(client, "format=geojson")
    assert r.headers["content-type"] == "application/geo+json"
    collection = GeoJSONResponse.model_validate(r.json())
    objects = (await post(client, "format=objects")).json()["objects"]
    assert len(collection.features) == len(objects)
    for feature, obj in zip(r.json()["features"], objects, strict=True):
        assert shape(feature["geometry"]).is_valid
        assert feature["geometry"] == obj["polygon"]
        assert feature["properties"] == {k: v for k, v in obj.items() if k != "polygon"}
    assert (r.json()["width"], r.json()["height"]) == (64, 48)


async def test_min_area_and_tolerance_shape_the_objects(tiny_checkpoint):
    mask = np.zeros((40, 60), np.uint8)
    mask[2:5, 2:5] = 1  # 9 pixels
    yy, xx = np.mgrid[:40, :60]
    mask[np.hypot(yy - 20, xx - 35) < 12] = 2  # a disc: many vertices unsimplified
    app = create_app(make_settings(tiny_checkpoint))
    async with running_client(app):
        version = serving(app)
        seg = Segmented(None, mask, {}, confidence=np.full(mask.shape, 255, np.uint8))
        exact = version.document(seg, Outputs(Format.objects, tolerance=0))
        kept = version.document(seg, Outputs(Format.objects, min_area=10))
        coarse = version.document(seg, Outputs(Format.objects, tolerance=3))
    disc_area = int((mask == 2).sum())
    assert sorted(o["area"] for o in exact["objects"]) == [9, disc_area]
    assert [o["area"] for o in kept["objects"]] == [disc_area]
    disc = [len(d["objects"][-1]["polygon"]["coordinates"][0]) for d in (exact, coarse)]
    assert disc[1] < disc[0]


async def test_the_query_options_become_the_requests_outputs():
    request = Request({"type": "http", "method": "POST", "path": "/segment", "query_string": b"",
                       "headers": [(b"accept-encoding", b"br, gzip;q=0.5")]})
    out = await outputs(request, Format.rle, "objects, confidence", 7, 2.5, "uncompressed")
    assert out == Outputs(Format.rle, frozenset({"objects", "confidence"}), min_area=7,
                          tolerance=2.5, compressed_rle=False, gzip=True)


async def test_npy_is_the_label_mask(client):
    r = await post(client, "format=npy")
    assert r.headers["content-type"] == "application/x-npy"
    mask = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert mask.dtype == np.uint8
    assert np.array_equal(mask, png_array((await post(client, "format=json")).json()["mask"][
        "data"]))


@pytest.mark.parametrize("query", ["format=png&include=objects", "format=npy&include=confidence",
                                   "format=overlay&include=probabilities"])
async def test_include_with_a_binary_format_is_400(client, query):
    r = await post(client, query)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_include"


async def test_include_with_geojson_adds_foreign_members(client):
    body = (await post(client, "format=geojson&include=confidence")).json()
    assert body["type"] == "FeatureCollection" and body["confidence"]["encoding"] == "png"


@pytest.mark.parametrize("query", ["min_area=0", "tolerance=-1", "rle=zip", "format=tiff",
                                   "include=colours", "include=confidence,nope"])
async def test_out_of_range_output_options_are_422(client, query):
    r = await post(client, query)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def test_json_is_gzipped_when_accepted_and_decodes_to_the_same_body(client):
    query = "format=objects&include=confidence"  # over the 1 KiB below which nothing is packed
    plain = await post(client, query, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 1024
    assert plain.headers["vary"] == "Accept-Encoding"  # a cache must key on it either way
    packed = await post(client, query, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert int(packed.headers["content-length"]) < len(plain.content)
    assert packed.json()["confidence"] == plain.json()["confidence"]


async def test_gzip_is_refused_with_q_zero_and_never_applied_to_png(client):
    r = await post(client, "format=json", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in r.headers
    r = await post(client, "format=png", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers and r.content[:4] == b"\x89PNG"


async def test_a_gzipped_npy_reads_back_with_the_standard_library(client):
    async with client.stream("POST", "/segment?format=npy",
                             files={"file": ("x.png", IMAGE, "image/png")},
                             headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "gzip"
    assert np.load(io.BytesIO(gzip.decompress(raw))).shape == (48, 64)


async def test_batch_items_carry_objects_and_confidence(client):
    files = [("file", (f"{i}.png", image_bytes(30, 20, seed=i), "image/png")) for i in range(2)]
    r = await client.post("/segment/batch?format=objects&include=confidence", files=files)
    for item in r.json():
        assert item["status"] == 200
        assert "objects" in item["result"] and "confidence" in item["result"]
    r = await client.post("/segment/batch?format=geojson", files=files)
    assert [item["result"]["type"] for item in r.json()] == ["FeatureCollection"] * 2


async def test_the_schema_lists_every_format_and_the_include_options(client):
    spec = (await client.get("/openapi.json")).json()
    params = {p["name"]: p for p in spec["paths"]["/segment"]["post"]["parameters"]}
    ref = params["format"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(spec["components"]["schemas"][ref]["enum"]) == {
        "json", "png", "rle", "overlay", "npy", "objects", "geojson"}
    assert {"include", "min_area", "tolerance", "rle"} <= params.keys()
    content = spec["paths"]["/segment"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "image/png", "application/x-npy",
            "application/geo+json"} <= content.keys()


def test_outputs_refuse_an_unknown_include_name_without_the_schema_too():
    with pytest.raises(InvalidInput, match="include=bogus is not known"):
        Outputs.parse(Format.json, "confidence, bogus")
    assert Outputs.parse(Format.json, " confidence,,objects ").include == {"confidence", "objects"}
