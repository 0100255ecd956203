"""The demo page in a real browser: Playwright driving Debian's Chromium against a real server.

`DECONVSEG_DEMO_SCREENSHOT=docs/demo.png pytest tests/e2e/test_demo_page.py` also saves the
README's screenshot of a segmented scene.
"""

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import serve
from tests.support.server import scene_jpeg

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "demo-key"
TIMEOUT_MS = 60_000  # two shared cores: a segmentation can wait behind other work


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Chromium is required: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--headless"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 760}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    yield from serve({"DECONVSEG_API_KEY": API_KEY})


def upload(page, name: str, data: bytes, mime: str) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])


def legend(page) -> list[tuple[str, str]]:
    rows = page.locator("#legend tr")
    return [(rows.nth(i).get_attribute("data-class"), rows.nth(i).locator("td").nth(1).inner_text())
            for i in range(rows.count())]


def canvas_pixels(page) -> np.ndarray:
    url = page.eval_on_selector("#overlay", "canvas => canvas.toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def show(page, server: str, scene: bytes) -> None:
    page.goto(f"{server}/")
    upload(page, "scene.jpg", scene, "image/jpeg")
    page.wait_for_selector("#result[data-state=done]")


def segment_json(server: str, scene: bytes) -> dict:
    """The API's answer to the page's own request."""
    return httpx.post(f"{server}/segment", params={"format": "json",
                                                   "include": "confidence,objects"},
                      files={"file": ("scene.jpg", scene)}, timeout=60).json()


def distance_to_rings(rings: list, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's distance to the nearest ring (drawn one pixel wide), (H, W) float32."""
    lines = Image.new("L", shape[::-1], 255)
    draw = ImageDraw.Draw(lines)
    for ring in rings:  # PIL puts pixel centres at integers, the API at half-integers
        draw.line([(x - 0.5, y - 0.5) for x, y in ring], fill=0)
    return cv2.distanceTransform(np.asarray(lines), cv2.DIST_L2, 5)


def two_decimals(score: float) -> str:
    """As JavaScript's toFixed(2) writes the float: its exact value, ties away from zero."""
    return str(Decimal(score).quantize(Decimal("0.01"), ROUND_HALF_UP))


def test_upload_shows_overlay_legend_latency_and_download(page, server):
    card = httpx.get(f"{server}/model", timeout=30).json()
    scene = scene_jpeg(256, 11)
    api = httpx.post(f"{server}/segment", files={"file": ("scene.jpg", scene)}, timeout=60).json()
    outside, script_errors = [], []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
               else (outside.append(route.request.url), route.abort()))
    page.goto(f"{server}/")
    page.wait_for_selector("#legend tr")

    upload(page, "scene.jpg", scene, "image/jpeg")
    page.wait_for_selector("#result[data-state=done]")

    rows = legend(page)
    assert [name for name, _ in rows] == card["classes"]
    for name, shown in rows:  # one decimal, "<0.1%" for a trace, as the API's fraction
        area = api["areas"][name] * 100
        assert shown == "<0.1%" if 0 < area < 0.05 else abs(float(shown[:-1]) - area) <= 0.05
    assert re.fullmatch(r"Latency: \d+ ms round trip · server: decode [\d.]+ ms, queue [\d.]+ ms, "
                        r"inference [\d.]+ ms, encode [\d.]+ ms", page.inner_text("#latency"))
    assert "scene.jpg" in page.get_attribute("#original", "alt")
    overlay = canvas_pixels(page)
    assert overlay.shape == (256, 256, 3)
    if path := os.environ.get("DECONVSEG_DEMO_SCREENSHOT"):
        page.screenshot(path=path)

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "scene.mask.png"
    with Image.open(download.path()) as mask:
        served = httpx.post(f"{server}/segment?format=png", files={"file": ("s.jpg", scene)},
                            timeout=60)
        assert mask.mode == "P"
        assert np.array_equal(np.asarray(mask), np.asarray(Image.open(io.BytesIO(served.content))))
    assert outside == [] and script_errors == []


def test_opacity_slider_blends_the_mask_over_the_image(page, server):
    page.goto(f"{server}/")
    upload(page, "scene.jpg", scene_jpeg(128, 2), "image/jpeg")
    page.wait_for_selector("#result[data-state=done]")
    page.fill("#opacity", "0")
    plain = canvas_pixels(page)
    page.fill("#opacity", "100")
    full = canvas_pixels(page)
    assert page.inner_text("#opacity-value") == "100%"
    changed = np.any(plain != full, axis=-1)
    assert 0 < changed.mean() < 1  # background pixels keep the image at any opacity
    palette = np.asarray(httpx.get(f"{server}/model", timeout=30).json()["palette"][1:])
    painted = full[changed]
    assert np.all(np.any(np.all(painted[:, None, :] == palette[None], axis=-1), axis=1))


def test_a_refused_upload_shows_the_api_message_in_an_alert(page, server):
    junk = b"this is a text file, not an image"
    expected = httpx.post(f"{server}/segment", files={"file": ("notes.txt", junk)},
                          timeout=30).json()["error"]["message"]
    page.goto(f"{server}/")
    assert page.get_by_role("alert").is_hidden()

    upload(page, "notes.txt", junk, "text/plain")

    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert expected in alert.inner_text() and "notes.txt" in alert.inner_text()


def test_file_input_and_slider_are_reachable_by_keyboard(page, server):
    page.goto(f"{server}/")
    reached = []
    for _ in range(8):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert "file" in reached and "opacity" in reached
    assert reached.index("file") < reached.index("opacity")
    page.focus("#opacity")
    page.keyboard.press("ArrowLeft")
    assert page.input_value("#opacity") == "45" and page.inner_text("#opacity-value") == "45%"


def test_phone_width_stacks_the_panels_without_sideways_scrolling(page, server):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{server}/")
    upload(page, "scene.jpg", scene_jpeg(96, 4), "image/jpeg")
    page.wait_for_selector("#result[data-state=done]")
    original = page.locator("#result figure").nth(0).bounding_box()
    overlay = page.locator("#result figure").nth(1).bounding_box()
    assert overlay["y"] >= original["y"] + original["height"] and overlay["x"] == original["x"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_with_an_api_key_the_page_asks_for_it_then_works(page, keyed_server):
    page.goto(f"{keyed_server}/")
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert "a valid API key is required" in alert.inner_text()
    assert page.locator("#key-box").get_attribute("open") is not None

    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")  # submits the key: the page reloads the model card
    page.wait_for_selector("#legend tr")
    assert alert.is_hidden()
    upload(page, "scene.jpg", scene_jpeg(64, 1), "image/jpeg")
    page.wait_for_selector("#result[data-state=done]")


def test_the_heat_layer_colours_the_image_by_confidence_and_unticks_back_to_the_mask(page,
                                                                                     server):
    scene = scene_jpeg(128, 3)
    data = base64.b64decode(segment_json(server, scene)["confidence"]["data"])
    confidence = np.asarray(Image.open(io.BytesIO(data)))
    show(page, server, scene)
    page.fill("#opacity", "100")
    mask = canvas_pixels(page)

    page.check("#heat")

    heat = canvas_pixels(page)
    assert page.inner_text("#overlay-caption") == "Confidence heat map"
    levels = np.unique(confidence)
    colours = [np.unique(heat[confidence == level], axis=0) for level in levels]
    assert len(levels) > 1 and all(len(c) == 1 for c in colours)  # one colour per level
    brightness = np.array([int(c[0].sum()) for c in colours])
    assert brightness[0] < brightness[-1] and np.all(np.diff(brightness) >= -2)  # rounding
    page.uncheck("#heat")
    assert np.array_equal(canvas_pixels(page), mask)
    assert page.inner_text("#overlay-caption") == "Mask overlay"


def test_the_object_list_shows_each_objects_class_area_and_score(page, server):
    scene = scene_jpeg(128, 5)
    objects = segment_json(server, scene)["objects"]
    show(page, server, scene)

    rows = page.locator("#objects tr")
    shown = [[rows.nth(i).locator("td").nth(k).inner_text() for k in range(3)]
             for i in range(rows.count())]

    assert page.inner_text("#object-count") == f"({len(objects)})" and objects
    assert [row[:2] for row in shown] == [[f"{n}. {o['class']}", f"{o['area']:,}"]
                                          for n, o in enumerate(objects, 1)]
    assert [row[2] for row in shown] == [two_decimals(o["score"]) for o in objects]


def test_hovering_an_object_row_outlines_that_object_and_its_holes(page, server):
    scene = scene_jpeg(256, 11)
    objects = segment_json(server, scene)["objects"]
    show(page, server, scene)
    before = canvas_pixels(page)
    # the object with the most holes, then the largest: in this scene, a ring with its hole
    n = max(range(len(objects)), key=lambda i: (len(objects[i]["polygon"]["coordinates"]),
                                                objects[i]["area"]))
    rings = objects[n]["polygon"]["coordinates"]
    assert len(rings) > 1
    scale = page.eval_on_selector("#overlay", "c => Math.max(c.width / c.clientWidth, "
                                              "c.height / c.clientHeight)")  # image px per CSS px

    page.hover(f"#objects tr >> nth={n}")

    changed = np.any(canvas_pixels(page) != before, axis=-1)
    # the dark stroke is 4 CSS px wide; 2 px more for antialiasing and PIL's whole pixels
    assert distance_to_rings(rings, changed.shape)[changed].max() <= 2 * scale + 2
    for ring in rings:  # the exterior and every hole
        assert changed[distance_to_rings([ring], changed.shape) == 0].mean() > 0.9
    page.mouse.move(0, 0)
    assert np.array_equal(canvas_pixels(page), before)
