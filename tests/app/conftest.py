import io
import threading
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.main import create_app
from app.service import Service
from app.settings import Settings
from model.checkpoint import checkpoint_dict, save_checkpoint
from model.classes import default_palette
from model.net import DeconvNet, NetConfig

CLASSES = ["background", "a", "b"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    model.train()
    model(torch.randn(4, 3, 32, 32))  # non-trivial BatchNorm statistics
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, checkpoint_dict(model.eval(), CLASSES, default_palette(3),
                                          [0.5] * 3, [0.25] * 3, train_size=32,
                                          object_scale=[2.0, 8.0],
                                          metrics={"val_miou": 0.5}))
    return path


def make_settings(checkpoint, **overrides) -> Settings:
    values = dict(checkpoint=checkpoint, device="cpu", threads=1, max_batch_size=4,
                  max_batch_delay_ms=20, max_queue=16, request_timeout_s=10, tile_size=64,
                  tile_overlap=8, max_pixels=200_000, max_side=4000, max_upload_bytes=2_000_000)
    values.update(overrides)
    return Settings(**values)


def png_bytes(width=32, height=24, mode="RGB", seed=0, fmt="PNG", **save) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    im = Image.fromarray(array)
    if mode != "RGB":
        im = im.convert(mode)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@asynccontextmanager
async def running_client(app, wait_ready=True):
    """httpx client over ASGI with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if wait_ready:
                await wait_until_ready(app)
            yield client


async def wait_until_ready(app):
    import asyncio

    service = app.state.service
    while not service.ready:  # warm-up runs in a thread; yield to it
        await asyncio.sleep(0.005)


@pytest.fixture
def settings(tiny_checkpoint):
    return make_settings(tiny_checkpoint)


@pytest.fixture
async def client(settings):
    async with running_client(create_app(settings)) as c:
        yield c


class GatedService(Service):
    """A Service whose model calls wait on a gate the test opens: timing without sleeps."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()
        predict = self.segmenter.predict

        def gated(items):
            self.entered.set()
            self.gate.wait(10)
            return predict(items)

        self.batcher.predict = gated

    def start(self):
        self.segmenter.warm_up(1)
        self.batcher.start()
        self.warm = True
