"""Every inference backend must agree with eager fp32 on the shipped model's held-out masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from app.inference import InferenceOptions, Segmenter
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes
from model.evaluate import HELD_OUT_SEED

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "model.pt"


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "engine"), [("bf16", "eager"), ("fp32", "torchscript"),
                                                 ("bf16", "torchscript"),
                                                 ("fp32", "onnxruntime")])
def test_backend_masks_agree_with_fp32_on_held_out_scenes(backend, engine):
    ckpt = load_checkpoint(SHIPPED)
    reference = Segmenter(ckpt, InferenceOptions(backend="fp32"), torch.device("cpu"))
    candidate = Segmenter(ckpt, InferenceOptions(backend=backend, engine=engine),
                          torch.device("cpu"))
    scenes = SyntheticScenes(24, size=256, seed=HELD_OUT_SEED)
    same = total = 0
    for i in range(len(scenes)):
        image, _ = scenes.render(i)
        item = reference.prepare(image)
        a, b = reference.predict([item])[0], candidate.predict([item])[0]
        same += int(np.count_nonzero(a == b))
        total += a.size
    assert same / total >= 0.999, f"{backend} {engine} agrees on {same / total:.5f} of pixels"


@pytest.mark.slow
def test_masks_do_not_depend_on_the_worker_thread_count():
    """Workers switch between all threads (alone) and a share (busy); the mask must not."""
    import threading

    ckpt = load_checkpoint(SHIPPED)
    seg = Segmenter(ckpt, InferenceOptions(backend="bf16", engine="torchscript"),
                    torch.device("cpu"))
    scenes = SyntheticScenes(6, size=256, seed=HELD_OUT_SEED)
    items = [seg.prepare(scenes.render(i)[0]) for i in range(len(scenes))]
    masks: dict[int, list[np.ndarray]] = {}

    def run(threads: int) -> None:
        torch.set_num_threads(threads)
        masks[threads] = [seg.predict([item])[0] for item in items]

    for threads in (1, 2):
        worker = threading.Thread(target=run, args=(threads,))
        worker.start()
        worker.join()
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[2], strict=True))


CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def onnxruntime_segmenter(tiny):
    return Segmenter(tiny, InferenceOptions(backend="fp32", engine="onnxruntime"), CPU)


def random_image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3),
                                                          dtype=np.uint8)


@pytest.mark.parametrize("size", [(1, 1), (7, 900), (257, 255), (800, 480)])  # > 768: tiled
def test_onnxruntime_masks_equal_eager_fp32_masks_at_any_size(tiny, onnxruntime_segmenter, size):
    eager = Segmenter(tiny, InferenceOptions(backend="fp32"), CPU)
    item = eager.prepare(random_image(*size))
    assert np.array_equal(eager.predict([item])[0], onnxruntime_segmenter.predict([item])[0])


def test_onnxruntime_masks_do_not_depend_on_the_worker_thread_count(onnxruntime_segmenter):
    from app.workers import in_own_thread

    item = onnxruntime_segmenter.prepare(random_image(64, 48))
    one, two = (in_own_thread(lambda: onnxruntime_segmenter.predict([item])[0], threads, "t")
                for threads in (1, 2))
    assert np.array_equal(one, two)


def test_onnxruntime_runs_fp32_on_cpu_only_and_auto_picks_fp32_for_it(tiny):
    from app.inference import resolve_backend

    assert resolve_backend("auto", CPU, "onnxruntime") == "fp32"
    with pytest.raises(ValueError, match="DECONVSEG_BACKEND=fp32"):
        Segmenter(tiny, InferenceOptions(backend="bf16", engine="onnxruntime"), CPU)


@pytest.mark.parametrize("variable", [("BACKEND", "bf16"), ("DEVICE", "cuda")])
def test_settings_refuse_onnxruntime_with_bf16_or_cuda_naming_both(monkeypatch, variable):
    from pydantic import ValidationError

    from app.settings import Settings, describe_validation_error

    monkeypatch.setenv("DECONVSEG_ENGINE", "onnxruntime")
    monkeypatch.setenv(f"DECONVSEG_{variable[0]}", variable[1])
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_validation_error(caught.value)
    assert "DECONVSEG_ENGINE=onnxruntime" in message and "=".join(variable) in message


@pytest.mark.slow
def test_tiled_masks_agree_with_whole_image_masks_on_held_out_photos():
    """The shipped model at a photo size, tiled at the default tile size vs run whole."""
    ckpt = load_checkpoint(SHIPPED)
    whole = Segmenter(ckpt, InferenceOptions(backend="fp32", tile_size=4096),
                      torch.device("cpu"))
    tiled = Segmenter(ckpt, InferenceOptions(backend="fp32"), torch.device("cpu"))
    scenes = SyntheticScenes(2, size=(600, 800), seed=HELD_OUT_SEED)
    same = total = 0
    for i in range(len(scenes)):
        image, _ = scenes.render(i)
        item = tiled.prepare(image)
        assert tiled.needs_tiling(item) and not whole.needs_tiling(whole.prepare(image))
        a, b = whole.predict([whole.prepare(image)])[0], tiled.predict([item])[0]
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= 0.999
