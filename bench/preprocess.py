"""Where normalisation runs: `python -m bench.preprocess`.

The same torchvision kernels two ways, at 256² and 1024×768 (best of 20):
- `io_thread`: `preprocess` (`eval_transforms`) in an I/O thread (one torch thread), then the
  frozen network on the float tensor (2 threads) — the service before issue 13's part 3;
- `in_graph`: one frozen graph fed the uint8 pixels, `Preprocess` then the network (2 threads)
  — `app.inference.Served`, what the service runs now.
And whether the two give the same logits, bit for bit.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from app.allocator import tune_malloc
from app.inference import Served, freeze_torchscript, resolve_backend
from model.checkpoint import load_checkpoint
from model.transforms import pixels_view, preprocess


def best_ms(fn: Callable[[], object], threads: int, rounds: int = 20) -> float:
    torch.set_num_threads(threads)
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 3)


def run(checkpoint: str = "weights/model.pt", threads: int = 2) -> list[dict]:
    tune_malloc()
    ckpt = load_checkpoint(checkpoint)
    backend = resolve_backend("auto", torch.device("cpu"))
    dtype = torch.bfloat16 if backend == "bf16" else torch.float32
    net = ckpt.model.eval().to(memory_format=torch.channels_last)
    frozen = freeze_torchscript(net, dtype)
    in_graph = freeze_torchscript(Served(net, ckpt.mean, ckpt.std), dtype)
    rows = []
    for height, width in [(256, 256), (768, 1024)]:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels = pixels_view(image)[None]  # channels-last, as decoded
        with torch.inference_mode():
            x = preprocess(image, ckpt.mean, ckpt.std)[None].to(dtype)
            same = torch.equal(frozen(x), in_graph(pixels))
            pre = functools.partial(preprocess, image, ckpt.mean, ckpt.std)
            forwards: dict[str, list[float]] = {"io_thread": [], "in_graph": []}
            for _ in range(2):  # alternated: a shared machine drifts
                forwards["io_thread"].append(best_ms(functools.partial(frozen, x), threads))
                forwards["in_graph"].append(best_ms(functools.partial(in_graph, pixels), threads))
            rows.append({
                "size": f"{width}×{height}", "backend": backend,
                "io_thread_preprocess_ms": best_ms(pre, 1),
                "io_thread_forward_ms": min(forwards["io_thread"]),
                "in_graph_forward_ms": min(forwards["in_graph"]), "same_logits": same})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
