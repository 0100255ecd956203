"""The served mask is the model's: argmax(model(normalise(image, the checkpoint's mean/std)))
computed here, independently of the service, for a tiny checkpoint whose mean/std are not the
defaults and whose answer depends on the image, untiled and tiled, with the eager and the frozen
engine."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from app.main import create_app
from model.checkpoint import load_checkpoint
from model.transforms import DEFAULT_MEAN, DEFAULT_STD
from tests.support.service import image_bytes, make_settings, running_client

TIE = 1e-3  # where the top two logits are closer than this, float rounding may pick either


def expected_mask(checkpoint_path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The model's own answer, and where it is decided by more than TIE."""
    ckpt = load_checkpoint(checkpoint_path)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255
    mean, std = np.asarray(ckpt.mean, np.float32), np.asarray(ckpt.std, np.float32)
    x = torch.from_numpy((pixels - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = ckpt.model.eval()(x)[0].double()
    top2 = logits.topk(2, dim=0).values
    return logits.argmax(0).numpy(), (top2[0] - top2[1] > TIE).numpy()


def test_the_responsive_checkpoint_does_not_use_the_default_normalisation(responsive_checkpoint):
    ckpt = load_checkpoint(responsive_checkpoint)
    assert list(ckpt.mean) != list(DEFAULT_MEAN) and list(ckpt.std) != list(DEFAULT_STD)


@pytest.mark.parametrize("engine", ["eager", "torchscript"])
@pytest.mark.parametrize(("width", "height"), [(40, 30), (90, 70)], ids=["whole", "tiled"])
async def test_the_served_mask_is_the_models_argmax(responsive_checkpoint, engine, width, height):
    # Tiles of 48 overlapping by 40: every kept pixel has 20 px of real context on each side,
    # all the tiny network's receptive field reaches (16 px was not: 2 pixels of 6,300
    # differed), so tiles agree with the whole image.
    settings = make_settings(responsive_checkpoint, backend="fp32", engine=engine,
                             tile_size=48, tile_overlap=40, max_pixels=1_000_000)
    data = image_bytes(width, height, seed=7)
    expected, decided = expected_mask(responsive_checkpoint, data)
    async with running_client(create_app(settings)) as client:
        r = await client.post("/segment?format=npy", files={"file": ("a.png", data, "image/png")})
    served = np.load(io.BytesIO(r.content))
    assert served.shape == (height, width) and decided.mean() > 0.8
    assert len(np.unique(expected[decided])) >= 2  # the answer depends on the pixels
    assert np.array_equal(served[decided], expected[decided])
