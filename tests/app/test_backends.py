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
                                                 ("bf16", "torchscript")])
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


def test_auto_backend_picks_bf16_only_where_the_cpu_has_it(monkeypatch):
    from app.inference import resolve_backend

    cpu = torch.device("cpu")
    assert resolve_backend("fp32", cpu) == "fp32" and resolve_backend("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_backend("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_backend("auto", cpu) == "bf16"


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
