"""Helpers shared by the service tests: settings, images, a running client, a gated model."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from app.pipeline import ModelVersion
from app.settings import Settings
from tests.tiny import CLASSES  # noqa: F401 (the service tests import it from here)


def make_settings(checkpoint, **overrides) -> Settings:
    values = dict(checkpoint=checkpoint, device="cpu", threads=1, io_threads=2,
                  max_batch_size=4, max_batch_delay_ms=20, max_queue=16, request_timeout_s=20,
                  tile_size=64, tile_overlap=8, max_pixels=200_000, max_upload_bytes=2_000_000)
    return Settings(**(values | overrides))


def image_bytes(width=32, height=24, mode="RGB", seed=0, fmt="PNG", **save) -> bytes:
    """Random pixels of this size, saved in `fmt` after converting to `mode`."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@asynccontextmanager
async def running_client(app: FastAPI, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over ASGI with the app's lifespan running (and, by default, warm)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if wait_ready:
                await app.state.warm_up
            yield client


async def post_image(client: httpx.AsyncClient, data: bytes, fmt: str | None = None,
                     name: str = "x.png", **kwargs) -> httpx.Response:
    url = "/segment" + (f"?format={fmt}" if fmt else "")
    return await client.post(url, files={"file": (name, data, "application/octet-stream")},
                             **kwargs)


def upload_field(spec: dict, path: str) -> dict:
    """The JSON schema of the route's multipart `file` field."""
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]["properties"]["file"]


def coco_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """Reference decoder written from the COCO spec: alternate 0/1 runs, column-major."""
    flat = np.concatenate([np.full(n, i % 2, np.uint8) for i, n in enumerate(counts)])
    return flat.reshape(width, height).T


def serving(app: FastAPI, name: str | None = None) -> ModelVersion:
    """The app's serving version of `name` (the default model when None)."""
    version = app.state.registry.serving(name)
    assert version is not None, f"model {name or 'default'} has no serving version"
    return version


async def entered(version: GatedVersion) -> None:
    """Until a batch of the gated version reaches predict (at most 10 s)."""
    assert await asyncio.to_thread(version.entered.wait, 10)


async def queued(app: FastAPI, count: int) -> None:
    """Until at least `count` images wait in the app's queue (at most 10 s)."""
    assert await asyncio.to_thread(app.state.runtime.batcher.wait_until_queued, count, 10)


class GatedVersion(ModelVersion):
    """A model version whose predict stage waits for the test to open `gate`: timing without
    sleeps. `entered` is set when a batch reaches predict; `batches` records each batch's image
    sizes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[tuple[int, int]]] = []

    def predict(self, items, context):
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.batches.append([(it.width, it.height) for it in items])
        return super().predict(items, context)
