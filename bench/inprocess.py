"""In-process model throughput: `python -m bench.inprocess [CHECKPOINT] --size 256 --batch 1 8`.

Times the network alone, exactly as the service runs it (`Segmenter.forward`: engine, dtype,
channels_last, inference mode), per backend and engine, on random normalised input after
warm-up. `--workers 2` also times two threads each running batch-1 forwards on an equal share of
the torch threads, the service's worker pool without HTTP.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading

import torch

from app.allocator import tune_malloc
from app.inference import InferenceOptions, Segmenter
from bench.timing import random_pixels, timed
from model.checkpoint import load_checkpoint

BACKENDS = ("fp32", "bf16")
ENGINES = ("eager", "torchscript")


def segmenter(checkpoint: str, backend: str, engine: str) -> Segmenter:
    return Segmenter(load_checkpoint(checkpoint), InferenceOptions(backend=backend, engine=engine),
                     torch.device("cpu"))


def time_batches(seg: Segmenter, size: int, batch: int, seconds: float) -> dict:
    x = random_pixels(batch, size, size)
    median = statistics.median(timed(lambda: seg.forward(x), seconds))
    return {"backend": seg.options.backend, "engine": seg.options.engine, "size": size,
            "batch": batch, "workers": 1, "images_per_s": round(batch / median, 2),
            "latency_ms": round(median * 1000, 2)}


def time_workers(seg: Segmenter, size: int, workers: int, seconds: float) -> dict:
    """`workers` threads, batch 1 each, torch threads split between them; images/s of all."""
    x = random_pixels(1, size, size)
    share = max(1, torch.get_num_threads() // workers)
    counts: list[list[float]] = []

    def work() -> None:
        torch.set_num_threads(share)  # per thread under OpenMP, as in the service
        counts.append(timed(lambda: seg.forward(x), seconds))

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    images = sum(len(c) for c in counts)
    busy = max(sum(c) for c in counts)
    median = statistics.median([v for c in counts for v in c])
    return {"backend": seg.options.backend, "engine": seg.options.engine, "size": size,
            "batch": 1, "workers": workers, "images_per_s": round(images / busy, 2),
            "latency_ms": round(median * 1000, 2)}


def run(checkpoint: str, sizes: list[int], batches: list[int], backends: list[str],
        engines: list[str], seconds: float, workers: int = 2) -> list[dict]:
    rows = []
    for backend in backends:
        for engine in engines:
            seg = segmenter(checkpoint, backend, engine)
            for size in sizes:
                rows += [time_batches(seg, size, b, seconds) for b in batches]
                if workers > 1:
                    rows.append(time_workers(seg, size, workers, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--size", type=int, nargs="+", default=[256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--backend", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--engine", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--workers", type=int, default=2, help="also time this many workers")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per point")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()  # as `python -m app` does
    rows = run(args.checkpoint, args.size, args.batch, args.backend, args.engine, args.seconds,
               args.workers)
    for r in rows:
        print(f"{r['backend']:>4} {r['engine']:>11} {r['size']}² batch {r['batch']:>2} "
              f"workers {r['workers']}: {r['images_per_s']:8.2f} img/s, "
              f"{r['latency_ms']:8.2f} ms/batch")
    print(json.dumps({"threads": torch.get_num_threads(), "results": rows}))


if __name__ == "__main__":
    main()
