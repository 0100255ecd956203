"""In-process model throughput: `python -m bench.inprocess [CHECKPOINT] --size 256 --batch 1 8`.

Times the network alone (inference_mode, channels_last) per backend — fp32 eager and bf16
autocast, the ones the service offers — on random normalised input, after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from model.checkpoint import load_checkpoint

BACKENDS = ("fp32", "bf16")


def time_batches(model: torch.nn.Module, size: int, batch: int, seconds: float,
                 backend: str = "fp32") -> dict:
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                enabled=backend == "bf16"):
        for _ in range(3):
            model(x)
        latencies = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(latencies) < 5:
            t0 = time.perf_counter()
            model(x)
            latencies.append(time.perf_counter() - t0)
    median = statistics.median(latencies)
    return {"backend": backend, "size": size, "batch": batch,
            "images_per_s": round(batch / median, 2), "latency_ms": round(median * 1000, 2),
            "runs": len(latencies)}


def run(checkpoint: str, sizes: list[int], batches: list[int], backends: list[str],
        seconds: float) -> list[dict]:
    model = load_checkpoint(checkpoint).model.to(memory_format=torch.channels_last)
    return [time_batches(model, s, b, seconds, be)
            for be in backends for s in sizes for b in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--size", type=int, nargs="+", default=[256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--backend", nargs="+", default=["fp32"], choices=BACKENDS)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing budget per point")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.checkpoint, args.size, args.batch, args.backend, args.seconds)
    for r in rows:
        print(f"{r['backend']:>4} {r['size']}² batch {r['batch']:>2}: {r['images_per_s']:8.2f} "
              f"img/s, {r['latency_ms']:8.2f} ms/batch ({r['runs']} runs)")
    print(json.dumps({"threads": torch.get_num_threads(), "results": rows}))


if __name__ == "__main__":
    main()
