"""app.client against the app in process (ASGI) or a mock transport; tests/e2e runs it for real."""

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from app.client import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    exit_status,
    get_args_parser,
    main,
    option_params,
    output_path,
    segment_all,
    segment_path,
)
from app.main import create_app
from tests.support.repository import add_version
from tests.support.server import free_port
from tests.support.service import CLASSES, image_bytes, make_settings


def write_images(folder: Path, *names: str) -> list[Path]:
    paths = []
    for seed, name in enumerate(names):
        path = folder / name
        path.write_bytes(image_bytes(20 + seed, 12, seed=seed))
        paths.append(path)
    return paths


@pytest.fixture
async def transport(settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.warm_up
        yield httpx.ASGITransport(app=app)


def test_output_name_is_the_stem_with_the_format_suffix(tmp_path):
    image = Path("photos/cat.v2.jpg")
    assert output_path(image, "png", tmp_path) == tmp_path / "cat.v2.mask.png"
    assert output_path(image, "overlay", tmp_path) == tmp_path / "cat.v2.overlay.png"
    assert output_path(image, "json", tmp_path) == tmp_path / "cat.v2.json"
    assert output_path(image, "objects", tmp_path) == tmp_path / "cat.v2.json"
    assert output_path(image, "geojson", tmp_path) == tmp_path / "cat.v2.geojson"
    assert output_path(image, "npy", tmp_path) == tmp_path / "cat.v2.npy"


@pytest.mark.parametrize("fmt", ["png", "overlay", "json"])
async def test_writes_one_output_per_image_with_the_image_size(transport, tmp_path, fmt):
    images = write_images(tmp_path, "a.png", "b.png", "c.png")
    out = tmp_path / "out"
    out.mkdir()
    outcomes = await segment_all(images, fmt, out, "http://test", transport=transport,
                                 quiet=True)
    assert [o.image for o in outcomes] == images and exit_status(outcomes) == 0
    for seed, outcome in enumerate(outcomes):
        assert outcome.output == output_path(outcome.image, fmt, out)
        if fmt == "json":
            body = json.loads(outcome.output.read_bytes())
            assert (body["width"], body["height"]) == (20 + seed, 12)
            assert body["classes"] == CLASSES
        else:
            with Image.open(outcome.output) as result:
                assert result.size == (20 + seed, 12)
                assert result.mode == ("P" if fmt == "png" else "RGB")


async def test_a_refused_image_carries_the_api_message_and_the_rest_are_written(
        transport, tmp_path):
    good, bad = write_images(tmp_path, "good.png", "bad.png")
    bad.write_bytes(b"this is not an image")
    outcomes = await segment_all([good, bad], "png", tmp_path, "http://test",
                                 transport=transport, quiet=True)
    assert outcomes[0].output.exists() and outcomes[1].output is None
    assert outcomes[1].error.startswith("HTTP 400 invalid_image: ")
    assert not outcomes[1].unreachable and exit_status(outcomes) == EXIT_FAILED
    assert not output_path(bad, "png", tmp_path).exists()


async def test_an_output_that_cannot_be_written_is_reported_and_the_rest_written(
        transport, tmp_path):
    blocked, fine = write_images(tmp_path, "blocked.png", "fine.png")
    output_path(blocked, "png", tmp_path).mkdir()  # a folder where the mask should go
    outcomes = await segment_all([blocked, fine], "png", tmp_path, "http://test",
                                 transport=transport, quiet=True)
    assert outcomes[0].error.startswith(f"cannot write {output_path(blocked, 'png', tmp_path)}")
    assert outcomes[1].output.is_file() and exit_status(outcomes) == EXIT_FAILED


async def test_the_api_key_is_sent_as_x_api_key(tiny_checkpoint, tmp_path):
    app = create_app(make_settings(tiny_checkpoint, api_key=SecretStr("s3cret")))
    images = write_images(tmp_path, "a.png")
    async with app.router.lifespan_context(app):
        await app.state.warm_up
        transport = httpx.ASGITransport(app=app)
        without = await segment_all(images, "png", tmp_path, "http://test", quiet=True,
                                    transport=transport)
        with_key = await segment_all(images, "png", tmp_path, "http://test", quiet=True,
                                     transport=transport, api_key="s3cret")
    assert without[0].error.startswith("HTTP 401 unauthorized: ")
    assert with_key[0].output is not None and with_key[0].error is None


async def test_no_more_than_concurrency_requests_are_in_flight(tmp_path):
    in_flight = peak = 0
    pair = asyncio.Barrier(2)

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.wait_for(pair.wait(), 10)  # passes only with two requests in flight
        in_flight -= 1
        return httpx.Response(200, content=b"mask")

    images = write_images(tmp_path, *(f"{i}.png" for i in range(6)))
    outcomes = await segment_all(images, "png", tmp_path, "http://test", concurrency=2,
                                 quiet=True, transport=httpx.MockTransport(handler))
    assert peak == 2
    assert all(o.output.read_bytes() == b"mask" for o in outcomes)


async def test_a_connection_lost_mid_run_counts_as_unreachable(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        raise httpx.ConnectError("connection refused", request=request)

    outcomes = await segment_all(write_images(tmp_path, "a.png"), "png", tmp_path,
                                 "http://test", quiet=True, transport=httpx.MockTransport(handler))
    assert outcomes[0].unreachable and "cannot reach the server at http://test" in outcomes[0].error
    assert exit_status(outcomes) == EXIT_UNREACHABLE


async def test_progress_counts_images_on_stderr(transport, tmp_path, capsys):
    await segment_all(write_images(tmp_path, "a.png", "b.png"), "png", tmp_path, "http://test",
                      transport=transport)
    captured = capsys.readouterr()
    assert "2/2" in captured.err and captured.out == ""


def test_unreachable_server_exits_3_with_one_line_and_no_traceback(tmp_path, capsys):
    image, = write_images(tmp_path, "a.png")
    url = f"http://127.0.0.1:{free_port()}"
    assert main([str(image), "--url", url, "--out", str(tmp_path / "out")]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the server at {url}" in err
    assert "Traceback" not in err


def test_a_missing_image_is_a_usage_error_before_any_request(tmp_path, capsys):
    image, = write_images(tmp_path, "a.png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(image), str(tmp_path / "missing.png"), "--url", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2
    assert "missing.png: no such file" in capsys.readouterr().err


def test_two_images_with_one_output_name_are_a_usage_error(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    first, second = write_images(tmp_path, "x/photo.png", "photo.jpg")
    with pytest.raises(SystemExit) as exit_info:
        main([str(first), str(second), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for line in ("0  every image", "1  at least one image failed", "2  usage error",
                 "3  the server could not be reached"):
        assert line in out


@pytest.mark.parametrize(("model", "version", "path"), [
    (None, None, "/segment"), ("roads", None, "/models/roads/segment"),
    ("roads", 3, "/models/roads/versions/3/segment"),
])
def test_the_model_and_version_choose_the_route(model, version, path):
    assert segment_path(model, version) == path


async def test_a_named_model_version_is_the_one_that_answers(tmp_path):
    add_version(tmp_path / "repo", "roads", 1, classes=["background", "road"])
    add_version(tmp_path / "repo", "shapes", 1)
    app = create_app(make_settings("unused.pt", model_repository=tmp_path / "repo"))
    async with app.router.lifespan_context(app):
        await app.state.warm_up
        (image,) = write_images(tmp_path, "a.png")
        outcomes = await segment_all([image], "json", tmp_path, "http://test", quiet=True,
                                     path=segment_path("shapes", 1),
                                     transport=httpx.ASGITransport(app=app))
    assert json.loads(outcomes[0].output.read_bytes())["classes"] == CLASSES


def test_a_version_without_a_model_is_a_usage_error(tmp_path, capsys):
    (image,) = write_images(tmp_path, "a.png")
    with pytest.raises(SystemExit) as info:
        main([str(image), "--version", "2"])
    assert info.value.code == 2 and "--version needs --model" in capsys.readouterr().err


async def test_npy_output_is_the_png_mask_as_a_uint8_height_by_width_array(transport, tmp_path):
    (image,) = write_images(tmp_path, "a.png")
    npy, png = [(await segment_all([image], fmt, tmp_path, "http://test", quiet=True,
                                   transport=transport))[0].output for fmt in ("npy", "png")]
    labels = np.load(npy)
    assert labels.dtype == np.uint8 and labels.shape == (12, 20)
    with Image.open(png) as mask:
        assert np.array_equal(labels, np.asarray(mask))


async def test_include_adds_its_fields_to_the_json_output(transport, tmp_path):
    (image,) = write_images(tmp_path, "a.png")
    (outcome,) = await segment_all([image], "json", tmp_path, "http://test", quiet=True,
                                   params={"include": "confidence,objects"}, transport=transport)
    body = json.loads(outcome.output.read_bytes())
    assert {"mask", "confidence", "objects"} <= body.keys() and "probabilities" not in body


@pytest.mark.parametrize(("flags", "message"), [
    (["--include", "confidence,mask"], "argument --include: 'confidence,mask': choose from "
                                       "confidence, probabilities, objects"),
    (["--include", ","], "argument --include: ',': choose from"),
    (["--min-area", "0"], "argument --min-area: '0': a whole number of pixels, at least 1"),
    (["--min-area", "2.5"], "argument --min-area: '2.5': a whole number of pixels"),
    (["--tolerance", "-1"], "argument --tolerance: '-1': a distance in pixels, 0 or more"),
    (["--tolerance", "nan"], "argument --tolerance: 'nan': a distance in pixels"),
    (["--format", "png", "--include", "objects"],
     "--include works with --format json or objects or geojson, not png"),
])
def test_a_bad_option_is_a_one_line_usage_error_before_any_request(tmp_path, capsys, flags,
                                                                    message):
    (image,) = write_images(tmp_path, "a.png")
    with pytest.raises(SystemExit) as info:
        main([str(image), "--url", f"http://127.0.0.1:{free_port()}", *flags])
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and err[-1].startswith("deconvseg: error: ")
    assert message in err[-1]


def test_options_given_become_query_parameters_and_the_rest_are_left_out():
    args = get_args_parser().parse_args(["a.png", "--include", " objects, confidence,objects",
                                         "--tolerance", "1.5"])
    assert option_params(args) == {"include": "objects,confidence", "tolerance": "1.5"}
