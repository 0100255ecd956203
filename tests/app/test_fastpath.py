"""The single-image fast path (app/fastpath.py): what it takes, what it leaves to FastAPI, and
that it answers every request exactly as FastAPI's route does."""

import json

import httpx
import pytest

from app.fastpath import (
    QUERY_MEMO_SIZE,
    Declined,
    SegmentFastPath,
    boundary_of,
    parse_query,
    single_file,
)
from app.main import create_app
from app.objects import DEFAULT_TOLERANCE
from app.pipeline import Format, Outputs
from tests.support.service import image_bytes, make_settings, running_client

BOUNDARY = b"b0undary"
HEADERS = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)]


def body_of(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A multipart body of these raw parts (each its headers, a blank line and its content)."""
    inner = b"".join(b"--" + BOUNDARY + b"\r\n" + part + b"\r\n" for part in parts)
    return preamble + inner + b"--" + BOUNDARY + b"--" + epilogue


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nPIXELS'


@pytest.mark.parametrize(("query", "expected"), [
    (b"", Outputs()),
    (b"format=png", Outputs(format=Format.png)),
    (b"include=confidence,%20objects&min_area=5&tolerance=0.5&rle=uncompressed",
     Outputs(Format.json, frozenset({"confidence", "objects"}), 5, 0.5, False)),
    (b"foo=1&format=rle&bar", Outputs(format=Format.rle)),
    (b"tolerance=1000", Outputs(tolerance=1000.0)),
])
def test_the_plain_query_forms_are_read(query, expected):
    assert parse_query(query) == expected
    assert Outputs().tolerance == DEFAULT_TOLERANCE


def test_the_accepted_encoding_comes_with_the_query():
    assert parse_query(b"format=npy", b"gzip, br") == Outputs(Format.npy, gzip=True)
    assert parse_query(b"", b"gzip;q=0") == Outputs(gzip=False)


@pytest.mark.parametrize("query", [
    b"format=tiff", b"format=png&format=json", b"format=", b"min_area=0", b"min_area=-1",
    b"min_area=1e3", b"min_area=%201", b"tolerance=1000.5", b"tolerance=nan", b"tolerance=-0",
    b"include=colour", b"include=%C3%A9", b"rle=zip", b"format=png&include=confidence",
])
def test_any_other_query_is_left_to_fastapi(query):
    with pytest.raises(Declined):
        parse_query(query)


def test_queries_are_parsed_once_declined_ones_too_and_the_memo_stays_bounded(monkeypatch):
    import app.fastpath
    parses = []
    monkeypatch.setattr(app.fastpath, "parse_query",
                        lambda *args: (parses.append(args), parse_query(*args))[1])
    fast = SegmentFastPath(None, None, None)
    assert fast.outputs(b"format=png", b"gzip") is fast.outputs(b"format=png", b"gzip")
    assert fast.outputs(b"format=npy", b"gzip") == Outputs(Format.npy, gzip=True)
    for _ in range(2):
        with pytest.raises(Declined):
            fast.outputs(b"format=tiff", None)
    assert parses == [(b"format=png", b"gzip"), (b"format=npy", b"gzip"), (b"format=tiff", None)]
    for n in range(QUERY_MEMO_SIZE + 10):
        fast.outputs(f"min_area={n + 1}".encode(), None)
    assert len(fast._queries) <= QUERY_MEMO_SIZE


def test_the_boundary_is_read_from_the_one_multipart_content_type():
    assert boundary_of(HEADERS) == BOUNDARY
    assert boundary_of([(b"content-type", b'Multipart/Form-Data; boundary="a b"')]) == b"a b"


@pytest.mark.parametrize("headers", [
    [], [(b"content-type", b"application/octet-stream")],
    [(b"content-type", b"multipart/form-data")], HEADERS + HEADERS,
    [(b"content-type", b"multipart/form-data; boundary=x; charset=utf-16")],
])
def test_other_content_types_are_left_to_fastapi(headers):
    with pytest.raises(Declined):
        boundary_of(headers)


def test_the_one_file_part_of_a_client_built_body_is_found():
    request = httpx.Request("POST", "http://x/segment",
                            files={"file": ("a.jpg", b"\r\n--not-the-boundary\r\n", "image/jpeg")})
    kind, _, boundary = request.headers["content-type"].partition("; boundary=")
    assert single_file(request.read(), boundary.encode()) == b"\r\n--not-the-boundary\r\n"
    assert single_file(body_of(FILE_PART, epilogue=b"\r\n"), BOUNDARY) == b"PIXELS"
    assert single_file(body_of(FILE_PART.replace(b"PIXELS", b"")), BOUNDARY) == b""


@pytest.mark.parametrize("body", [
    body_of(FILE_PART, preamble=b"hello\r\n"),
    body_of(FILE_PART, FILE_PART),
    body_of(FILE_PART, b'Content-Disposition: form-data; name="note"\r\n\r\nhi'),
    body_of(b'Content-Disposition: form-data; name="file"\r\n\r\nPIXELS'),
    body_of(b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nPIXELS'),
    body_of(b'Content-Disposition: attachment; name="file"; filename="a.png"\r\n\r\nPIXELS'),
    body_of(b'Content-Disposition: form-data;\r\n name="file"; filename="a.png"\r\n\r\nPIXELS'),
    body_of(b'Content-Type: image/png\r\n\r\nPIXELS'),
    body_of(FILE_PART, epilogue=b"trailing"),
    body_of(FILE_PART)[:-2],
    b"--" + BOUNDARY + b"\r\n" + FILE_PART,
])
def test_any_other_multipart_shape_is_left_to_fastapi(body):
    with pytest.raises(Declined):
        single_file(body, BOUNDARY)


def comparable(response: httpx.Response) -> tuple:
    """What must not depend on the path taken: status, headers and body, less the timings."""
    headers = {k: v for k, v in response.headers.items()
               if k not in ("server-timing", "content-length", "date")}
    body: object = response.content
    if response.headers.get("content-type", "").endswith("json"):
        body = json.loads(response.content)
        if isinstance(body, dict):
            body.pop("timings_ms", None)
    return response.status_code, headers, body


PNG = image_bytes(40, 30)
UPLOAD = {"file": ("a.png", PNG)}
REQUESTS = [
    ("/segment", {}, UPLOAD),
    ("/segment?format=png", {}, UPLOAD),
    ("/segment?format=rle&rle=uncompressed", {}, UPLOAD),
    ("/segment?format=npy", {"Accept-Encoding": "gzip"}, UPLOAD),
    ("/segment?format=objects&min_area=3&tolerance=0.5", {}, UPLOAD),
    ("/segment?format=geojson", {}, UPLOAD),
    ("/segment?format=overlay", {}, UPLOAD),
    ("/segment?include=confidence,probabilities", {}, UPLOAD),
    ("/models/tiny/segment?format=png", {}, UPLOAD),
    ("/models/tiny/versions/1/segment", {}, UPLOAD),
    ("/models/tiny/versions/01/segment", {}, UPLOAD),
    ("/models/nope/segment", {}, UPLOAD),
    ("/models/tiny/versions/9/segment", {}, UPLOAD),
    ("/segment?format=png&include=confidence", {}, UPLOAD),
    ("/segment?format=tiff", {}, UPLOAD),
    ("/segment?min_area=0", {}, UPLOAD),
    ("/segment", {}, {"file": ("a.png", b"")}),
    ("/segment", {}, {"file": ("a.txt", b"not an image")}),
    ("/segment", {}, {"image": ("a.png", PNG)}),
    ("/segment", {}, {"file": ("a.png", PNG), "other": ("b.png", PNG)}),
]


@pytest.mark.parametrize(("url", "headers", "files"), REQUESTS, ids=[r[0] for r in REQUESTS])
async def test_the_fast_path_answers_as_fastapi_does(tiny_checkpoint, url, headers, files):
    answers = []
    for fast in (True, False):
        app = create_app(make_settings(tiny_checkpoint), fast_path=fast)
        async with running_client(app) as client:
            answers.append(comparable(await client.post(url, headers=headers, files=files)))
    assert answers[0] == answers[1]


async def test_plain_uploads_stop_at_the_fast_path_and_others_go_on(tiny_checkpoint):
    """The fast path in front of an app that only records what reaches it: the plain upload is
    answered without it; what is declined reaches it with its body whole, read or not."""
    reached: list[tuple[str, bytes]] = []

    async def behind(scope, receive, send):
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reached.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = create_app(make_settings(tiny_checkpoint))
    async with running_client(app):
        fast = SegmentFastPath(behind, app.state.registry, app.state.runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast),
                                     base_url="http://test") as client:
            plain = await client.post("/models/tiny/segment?format=png",
                                      files={"file": ("a", PNG)})
            two = httpx.Request("POST", "http://test/segment",
                                files={"file": ("a", PNG), "x": ("b", PNG)})
            declined = await client.send(two)
            tiff = await client.post("/segment?format=tiff", files={"file": ("a", PNG)})
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert (declined.status_code, tiff.status_code) == (404, 404)
    assert reached[0] == ("/segment", two.read()) and reached[1][0] == "/segment"
    assert len(reached) == 2


async def test_fast_path_answers_are_counted_under_their_route(tiny_checkpoint):
    async with running_client(create_app(make_settings(tiny_checkpoint))) as client:
        await client.post("/models/tiny/segment?format=png", files={"file": ("a", PNG)})
        metrics = (await client.get("/metrics")).text
    assert 'route="/models/{name}/segment",status="200"' in metrics


async def test_a_declined_body_is_replayed_whole_to_fastapi(tiny_checkpoint):
    """An extra form field sends the upload to FastAPI after the fast path read it: FastAPI
    ignores the field and segments the image as the fast path would have."""
    async with running_client(create_app(make_settings(tiny_checkpoint))) as client:
        with_field = await client.post("/segment?format=png", files={"file": ("a", PNG)},
                                       data={"note": "x" * 100_000})
        plain = await client.post("/segment?format=png", files={"file": ("a", PNG)})
    assert with_field.status_code == 200
    assert with_field.content == plain.content
