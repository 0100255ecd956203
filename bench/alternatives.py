"""Engines against each other: `python -m bench.alternatives [CHECKPOINT]
[--sizes 256x256 768x1024] [--seconds 3] [--rounds 3] [--threads N] [--candidates …]`.

Times the served engines as the service runs them (`Segmenter.forward`) — TorchScript bf16 and
fp32, and ONNX Runtime fp32 (the dynamic-shape export of `model.export`, one session for every
size) — and `torch.compile` (Inductor, bf16 weights; not served: compile time is paid per new
input shape, so a service would have to bucket shapes). All the same way: batch 1, all torch
threads (or `--threads`), candidates interleaved round by round so that a busy neighbour slows
them alike, median and best per size (H×W); each is checked against eager fp32 on held-out 256²
scenes (the ≥ 99.9 % mask-agreement rule).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from app.inference import InferenceOptions, Segmenter
from bench.timing import random_pixels, timed
from model.checkpoint import Checkpoint, load_checkpoint
from model.data import SyntheticScenes
from model.evaluate import HELD_OUT_SEED
from model.transforms import Preprocess, pixels_view, preprocess

AGREEMENT_SIZE = 256
SIZES = ((256, 256), (768, 1024))


@dataclass
class Candidate:
    backend: str
    setup_s: float
    logits: Callable[[torch.Tensor], np.ndarray]  # uint8 pixels (1, 3, h, w) → (1, K, h, w)


def _agreement(ckpt: Checkpoint, candidate: Candidate, scenes: int) -> float:
    data = SyntheticScenes(scenes, size=AGREEMENT_SIZE, seed=HELD_OUT_SEED)
    same = total = 0
    for i in range(scenes):
        image = data.render(i)[0]
        with torch.inference_mode():
            a = ckpt.model(preprocess(image, ckpt.mean, ckpt.std)[None]).argmax(1).numpy()
        b = candidate.logits(pixels_view(image)[None]).argmax(1)
        same += int(np.count_nonzero(a == b))
        total += a.size
    return same / total


def served(ckpt: Checkpoint, backend: str, engine: str) -> Candidate:
    t0 = time.perf_counter()
    seg = Segmenter(ckpt, InferenceOptions(backend=backend, engine=engine), torch.device("cpu"))
    return Candidate(f"{engine} ({backend})", time.perf_counter() - t0,
                     lambda x: seg.forward(x).numpy())


def compiled(ckpt: Checkpoint) -> Candidate:
    net = copy.deepcopy(ckpt.model).to(torch.bfloat16).to(memory_format=torch.channels_last)
    fn = torch.compile(net)
    normalise = Preprocess(ckpt.mean, ckpt.std)

    def logits(pixels: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            x = normalise(pixels.contiguous(memory_format=torch.channels_last))
            return fn(x.to(torch.bfloat16)).float().numpy()

    t0 = time.perf_counter()
    logits(random_pixels(1, AGREEMENT_SIZE, AGREEMENT_SIZE))
    return Candidate("torch.compile (inductor, bf16)", time.perf_counter() - t0, logits)


BUILDERS: dict[str, Callable[[Checkpoint], Candidate]] = {
    "torchscript-bf16": lambda ckpt: served(ckpt, "bf16", "torchscript"),
    "torchscript-fp32": lambda ckpt: served(ckpt, "fp32", "torchscript"),
    "onnxruntime": lambda ckpt: served(ckpt, "fp32", "onnxruntime"),
    "compile": compiled,
}


def run(checkpoint: str, seconds: float = 3.0, scenes: int = 12,
        sizes: tuple[tuple[int, int], ...] = SIZES, rounds: int = 3,
        names: tuple[str, ...] = tuple(BUILDERS)) -> list[dict]:
    """One row per candidate and size: setup seconds, median and best latency, images/s (of
    the median), agreement."""
    ckpt = load_checkpoint(checkpoint)
    rows: list[dict] = []
    candidates: list[tuple[Candidate, float]] = []
    for name in names:
        try:
            candidate = BUILDERS[name](ckpt)
            candidates.append((candidate, _agreement(ckpt, candidate, scenes)))
        except Exception as exc:  # report it: a failing alternative is a result too
            rows.append({"backend": name, "error": f"{type(exc).__name__}: {exc}"})
    for height, width in sizes:
        x = random_pixels(1, height, width)
        times: dict[str, list[float]] = {c.backend: [] for c, _ in candidates}
        for round_ in range(rounds):
            for c, _ in candidates:
                times[c.backend] += timed(lambda c=c, x=x: c.logits(x), seconds / rounds,
                                          runs=3, warm_up=3 if round_ == 0 else 1)
        for c, agreement in candidates:
            ms = float(np.median(times[c.backend])) * 1000
            rows.append({"backend": c.backend, "size": f"{height}x{width}",
                         "setup_s": round(c.setup_s, 1), "latency_ms": round(ms, 2),
                         "best_ms": round(min(times[c.backend]) * 1000, 2),
                         "images_per_s": round(1000 / ms, 2), "agreement": round(agreement, 5)})
    return rows


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per candidate, size")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size")
    parser.add_argument("--sizes", type=_size, nargs="+", default=list(SIZES),
                        help="HxW (or one side for a square)")
    parser.add_argument("--candidates", nargs="+", choices=list(BUILDERS),
                        default=list(BUILDERS))
    parser.add_argument("--threads", type=int, help="torch (and ONNX Runtime) threads; "
                        "1 = a busy worker's share on 2 cores; default: all cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.checkpoint, args.seconds, sizes=tuple(args.sizes), rounds=args.rounds,
               names=tuple(args.candidates))
    for row in rows:
        print(row)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
