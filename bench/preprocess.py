"""Where normalisation runs: `python -m bench.preprocess`.

Times the service's preprocessing (torchvision.transforms.v2 in an I/O thread) plus the frozen
bf16 forward, against one frozen graph that takes uint8 pixels and normalises inside, at 256²
and 1024×768 (2 threads, best of 20), and checks the two give the same masks.
"""

from __future__ import annotations

import copy
import functools
import json
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from app.allocator import tune_malloc
from app.inference import freeze_torchscript
from model.checkpoint import load_checkpoint
from model.transforms import preprocess


class NormalizeInside(torch.nn.Module):
    """uint8 (N, 3, H, W) → logits: the normalisation as the graph's first ops."""

    def __init__(self, net: torch.nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        std_t = torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std_t))
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() * self.scale - self.shift).to(torch.bfloat16))


def best_ms(fn: Callable[[], object], rounds: int = 20) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def run(checkpoint: str = "weights/model.pt") -> list[dict]:
    tune_malloc()
    torch.set_num_threads(2)
    ckpt = load_checkpoint(checkpoint)
    net = ckpt.model.eval().to(memory_format=torch.channels_last)
    frozen = freeze_torchscript(net, torch.bfloat16)
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.compile
        warnings.simplefilter("ignore", FutureWarning)
        inside = torch.jit.freeze(torch.jit.script(NormalizeInside(
            copy.deepcopy(net).to(torch.bfloat16), ckpt.mean, ckpt.std).eval()))
    rows = []
    for height, width in [(256, 256), (768, 1024)]:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        raw = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            x = preprocess(image, ckpt.mean, ckpt.std)[None]
            ready = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            same = float((frozen(ready).argmax(1) == inside(raw).argmax(1)).float().mean())
            rows.append({
                "size": f"{width}×{height}",
                "preprocess_ms": best_ms(functools.partial(preprocess, image, ckpt.mean,
                                                           ckpt.std)),
                "forward_ms": best_ms(functools.partial(frozen, ready)),
                "normalise_in_graph_ms": best_ms(functools.partial(inside, raw)),
                "mask_agreement": round(same, 5)})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
