"""`python -m bench` (or `make bench`): one run, one report, so every ratio is from the same run.

1. the limit (GEMM peak, model FLOPs, FLOP-bound images/s); 2. in-process images/s per backend,
batch and size; 3. the real server under load (batching on/off, per backend); 4. the naive
baseline under the same load; 5. latency and peak RSS vs image size; 6. each response format's
encode time and size on a 12 MP photo. Writes
bench/results/report.md, results.json and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from app.allocator import tune_malloc
from bench import alternatives, inprocess, limit, outputs, scaling, stages
from bench.load import served
from bench.report import write_report
from model.checkpoint import load_checkpoint
from model.net import count_flops

RESULTS = Path(__file__).parent / "results"

# Served configurations: "<backend> <engine>, <workers>, batching on|off". The first is the
# default (`auto` settings on this 2-core AVX512-BF16 CPU); the others isolate one change each.
SERVED_CONFIGS: list[tuple[str, dict[str, str]]] = [
    ("bf16 torchscript, 2 workers, batching on", {"DECONVSEG_WORKERS": "2"}),
    ("bf16 torchscript, 2 workers, batching off", {"DECONVSEG_WORKERS": "2",
                                                   "DECONVSEG_MAX_BATCH_SIZE": "1"}),
    ("bf16 torchscript, 1 worker, batching on", {"DECONVSEG_WORKERS": "1"}),
    ("bf16 eager, 1 worker, batching on", {"DECONVSEG_ENGINE": "eager", "DECONVSEG_WORKERS": "1"}),
    ("fp32 torchscript, 2 workers, batching on", {"DECONVSEG_BACKEND": "fp32",
                                                  "DECONVSEG_WORKERS": "2"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--quick", action="store_true", help="fewer points, for a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    quick = args.quick
    tune_malloc()  # in-process rows run as `python -m app` does (served ones start their own)
    started = time.time()
    model = load_checkpoint(args.checkpoint).model
    result: dict = {"checkpoint": args.checkpoint, "torch": torch.__version__,
                    "threads": torch.get_num_threads()}

    print("1. limit", flush=True)
    result["limit"] = limit.limits(count_flops(model, 256, 256))
    print(f"  {result['limit']}", flush=True)

    print("2. in-process", flush=True)
    result["inprocess"] = inprocess.run(
        args.checkpoint, [256] if quick else [256, 512], [1, 4] if quick else [1, 2, 4, 8, 16],
        list(inprocess.BACKENDS), list(inprocess.ENGINES), 1.0 if quick else 2.0)
    for r in result["inprocess"]:
        print(f"  {r}", flush=True)

    print("2b. engines and alternatives", flush=True)
    result["alternatives"] = alternatives.run(args.checkpoint, 1.0 if quick else 3.0)
    for r in result["alternatives"]:
        print(f"  {r}", flush=True)

    print("2c. stage costs of one 256² request", flush=True)
    result["stages"] = stages.run(args.checkpoint)
    for r in result["stages"]:
        print(f"  {r}", flush=True)

    print("3. served", flush=True)
    levels = [1, 16] if quick else [1, 4, 16, 32, 64]
    requests, seconds = (60, 10) if quick else (300, 25)
    result["served"] = {}
    for name, env in SERVED_CONFIGS:
        if quick and name != SERVED_CONFIGS[0][0]:
            continue
        result["served"][name] = served(args.checkpoint, env, levels, requests,
                                        seconds)["rows"]

    print("4. naive baseline", flush=True)
    result["naive"] = served(args.checkpoint, {}, levels, requests, seconds,
                             module="bench.baselines.naive")["rows"]

    print("5. scaling", flush=True)
    sizes = [256, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192]
    result["scaling"] = scaling.run(args.checkpoint, sizes)

    print("6. response formats on a 12 MP photo", flush=True)
    result["outputs"] = outputs.run(args.checkpoint, *((1024, 768) if quick else (4032, 3024)))
    result["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    write_report(result, args.out)
    print(f"wrote {args.out}/report.md in {result['seconds']} s")


if __name__ == "__main__":
    main()
