"""Backends measured but not served: `python -m bench.alternatives [CHECKPOINT]`.

The service runs a frozen TorchScript graph (see `app.inference`). This times the other
candidates the same way — 256² batch 1, all torch threads, median after warm-up — and checks
each against eager fp32 on held-out scenes (the ≥ 99.9 % mask-agreement rule):
- `torch.compile` (Inductor, bf16 weights): compile time is paid per new input shape, so a
  service would have to bucket shapes;
- ONNX Runtime (CPU execution provider, fp32): exported with a fixed 256² input, because
  `ConvTranspose2d(output_size=…)` bakes each layer's output padding into the graph.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from bench.timing import timed
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes
from model.evaluate import HELD_OUT_SEED
from model.transforms import preprocess

SIZE = 256


def _median_ms(fn: Callable[[], object], seconds: float) -> float:
    return statistics.median(timed(fn, seconds)) * 1000


def _agreement(reference: torch.nn.Module, candidate: Callable[[torch.Tensor], np.ndarray],
               mean: list[float], std: list[float], scenes: int) -> float:
    data = SyntheticScenes(scenes, size=SIZE, seed=HELD_OUT_SEED)
    same = total = 0
    for i in range(scenes):
        x = preprocess(data.render(i)[0], mean, std)[None]
        with torch.inference_mode():
            a = reference(x).argmax(1).numpy()
        b = candidate(x)
        same += int(np.count_nonzero(a == b))
        total += a.size
    return same / total


def compiled(model: torch.nn.Module, seconds: float, scenes: int, mean, std) -> dict:
    net = copy.deepcopy(model).to(torch.bfloat16).to(memory_format=torch.channels_last)
    fn = torch.compile(net)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))

    x = torch.randn(1, 3, SIZE, SIZE)
    t0 = time.perf_counter()
    run(x)
    compile_s = time.perf_counter() - t0
    ms = _median_ms(lambda: run(x), seconds)
    agree = _agreement(model, lambda x: run(x).float().argmax(1).numpy(), mean, std, scenes)
    return {"backend": "torch.compile (inductor, bf16)", "setup_s": round(compile_s, 1),
            "latency_ms": round(ms, 2), "images_per_s": round(1000 / ms, 2),
            "agreement": round(agree, 5)}


def onnxruntime_fp32(model: torch.nn.Module, seconds: float, scenes: int, mean, std) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"backend": "onnxruntime (fp32)", "error": "onnxruntime is not installed"}
    x = torch.randn(1, 3, SIZE, SIZE)
    t0 = time.perf_counter()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model), (x,), buffer, input_names=["x"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buffer.getvalue(), options,
                                   providers=["CPUExecutionProvider"])
    setup = time.perf_counter() - t0

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {"x": x.numpy()})[0]

    ms = _median_ms(lambda: run(x), seconds)
    agree = _agreement(model, lambda x: run(x).argmax(1), mean, std, scenes)
    return {"backend": "onnxruntime (fp32)", "setup_s": round(setup, 1),
            "latency_ms": round(ms, 2), "images_per_s": round(1000 / ms, 2),
            "agreement": round(agree, 5)}


def run(checkpoint: str, seconds: float = 3.0, scenes: int = 12) -> list[dict]:
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    rows = []
    for measure in (onnxruntime_fp32, compiled):
        try:
            rows.append(measure(model, seconds, scenes, ckpt.mean, ckpt.std))
        except Exception as exc:  # report it: a failing alternative is a result too
            rows.append({"backend": measure.__name__, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rows = run(args.checkpoint, args.seconds)
    for row in rows:
        print(row)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
