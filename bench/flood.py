"""Goodput under a flood, with a load generator faster than the server (Debian's `hey`):
`python -m bench.flood [--pace-ms 20] [--out bench/results/flood.json]`.

A real server with DECONVSEG_MAX_QUEUE=16. Capacity: `hey` with 4 connections for 10 s. Then
three floods of 64 connections for 15 s each (512² JPEG, no think time), and after each one,
once the server has gone quiet, its RSS. Reports admitted throughput against capacity, the 503
latency percentiles (from hey's per-request CSV), the event loop's CPU per request (its thread's
/proc counters) and RSS against the start.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import process_cpu_seconds
from tests.support.server import (
    BOUNDARY,
    memory_trims,
    multipart_body,
    rss_mb,
    scene_jpeg,
    settled,
    start_server,
    stop,
)


def hey(base: str, body: Path, connections: int, seconds: int) -> list[tuple[int, float]]:
    """(status, seconds) per request."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST", "-o", "csv",
         "-T", f"multipart/form-data; boundary={BOUNDARY}", "-D", str(body),
         f"{base}/segment?format=png"], capture_output=True, text=True, check=True)
    rows = csv.DictReader(io.StringIO(out.stdout))
    return [(int(r["status-code"]), float(r["response-time"])) for r in rows]


def run(checkpoint: str, pace_ms: float) -> dict[str, Any]:
    if shutil.which("hey") is None:
        raise SystemExit("hey is needed: apt-get install hey")
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(multipart_body(scene_jpeg(512, 0)))
        proc, base = start_server({"DECONVSEG_CHECKPOINT": checkpoint,
                                   "DECONVSEG_MAX_QUEUE": "16",
                                   "DECONVSEG_REFUSAL_PACE_MS": str(pace_ms)},
                                  log=Path(tmp) / "server.log")
        try:
            start_rss = rss_mb(proc.pid)
            capacity = sum(s == 200 for s, _ in hey(base, body, 4, 10)) / 10
            floods = []
            for _ in range(3):
                before = memory_trims(base)
                loop_before = process_cpu_seconds(proc.pid, proc.pid)
                results = hey(base, body, 64, 15)
                loop_cpu = process_cpu_seconds(proc.pid, proc.pid) - loop_before
                settled(base, before, within_s=30)
                refused = [t for s, t in results if s == 503]
                floods.append({
                    "admitted_per_s": round(sum(s == 200 for s, _ in results) / 15, 1),
                    "refused_per_s": round(len(refused) / 15, 1),
                    "other_statuses": sorted({s for s, _ in results} - {200, 503}),
                    "refused_p50_ms": round(float(np.percentile(refused, 50)) * 1000, 1)
                    if refused else None,
                    "refused_p99_ms": round(float(np.percentile(refused, 99)) * 1000, 1)
                    if refused else None,
                    "loop_cpu_ms_per_request": round(loop_cpu / max(1, len(results)) * 1000, 3),
                    "rss_mb_after": round(rss_mb(proc.pid), 1)})
        finally:
            stop(proc)
    goodput = min(f["admitted_per_s"] for f in floods)
    return {"pace_ms": pace_ms, "capacity_per_s": capacity, "floods": floods,
            "goodput_over_capacity": round(goodput / capacity, 2),
            "rss_start_mb": round(start_rss, 1),
            "rss_after_three_over_start": round(floods[-1]["rss_mb_after"] / start_rss, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--pace-ms", type=float, nargs="+", default=[0, 20])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [run(args.checkpoint, pace) for pace in args.pace_ms]
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
