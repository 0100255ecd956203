"""Served throughput: `python -m bench.load [--checkpoint P] --concurrency 1 16 --requests 200`.

Starts the real server (`python -m app`) on a free loopback port, then a load generator in a
separate process (async httpx, bounded in requests and seconds) posts 256² JPEGs at each
concurrency and prints requests/s, p50/p95/p99 latency and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np

from tests.support.server import BOUNDARY, multipart_body, scene_jpeg, start_server, stop


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def process_cpu_seconds(pid: int | None, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads) so far; Linux /proc,
    nan elsewhere or without a pid. The server's thread `pid` is its main thread: the event
    loop."""
    if pid is None:
        return float("nan")
    stat = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def generate_load(url: str, images: list[bytes], concurrency: int, requests: int,
                        max_seconds: float, server_pid: int | None = None) -> dict:
    """Post `requests` images from `concurrency` clients; also the CPU each side spent."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(requests))
    stop_at = time.perf_counter() + max_seconds

    # The multipart bodies are built once: the load generator shares the server's cores, so its
    # own CPU per request is kept small (and reported).
    bodies = [multipart_body(image) for image in images]
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() > stop_at:
                return
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=bodies[i % len(bodies)], headers=headers)
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        server_cpu = process_cpu_seconds(server_pid)
        loop_cpu = process_cpu_seconds(server_pid, server_pid)
        client_cpu = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = process_cpu_seconds(server_pid) - server_cpu
        loop_cpu = process_cpu_seconds(server_pid, server_pid) - loop_cpu
    ok = statuses.get(200, 0)
    per_request = 1000 / max(len(latencies), 1)
    return {"concurrency": concurrency, "requests": len(latencies), "ok": ok,
            "errors": len(latencies) - ok, "seconds": round(elapsed, 2),
            "requests_per_s": round(ok / elapsed, 2),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "server_cpu_ms_per_request": round(server_cpu * per_request, 2),
            "event_loop_cpu_ms_per_request": round(loop_cpu * per_request, 2),
            "client_cpu_ms_per_request": round(client_cpu * per_request, 2),
            "statuses": statuses}


def served(checkpoint: str, env: dict[str, str], levels: list[int], requests: int,
           seconds: float, module: str = "app", size: int = 256) -> dict:
    """One server, loaded at each concurrency in turn (after a short warm run per level):
    {"rows": one generate_load result per level, "mean_batch_size": from its metrics}."""
    images = [scene_jpeg(size, i) for i in range(8)]
    proc, base = start_server({"DECONVSEG_CHECKPOINT": checkpoint, "DECONVSEG_DEVICE": "cpu",
                               "DECONVSEG_LOG_LEVEL": "warning", **env}, module=module)
    try:
        rows = []
        for c in levels:
            asyncio.run(generate_load(f"{base}/segment", images, c, max(2 * c, 16), 20))
            r = asyncio.run(generate_load(f"{base}/segment", images, c, requests, seconds,
                                          proc.pid))
            rows.append(r)
            print(f"  {module} {env or ''} c={c:>2}: {r['requests_per_s']:6.2f} req/s  "
                  f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} "
                  f"ms  errors {r['errors']}  cpu/request: server "
                  f"{r['server_cpu_ms_per_request']} ms (event loop "
                  f"{r['event_loop_cpu_ms_per_request']} ms), client "
                  f"{r['client_cpu_ms_per_request']} ms", flush=True)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        stop(proc)
    batch: dict[str, float] = {}  # summed over the model/version labels
    for line in metrics.splitlines():
        words = line.split("{")[0].split() if not line.startswith("#") else []
        name = words[0] if words else ""  # blank and comment lines have none
        if name in ("deconvseg_batch_size_sum", "deconvseg_batch_size_count"):
            batch[name] = batch.get(name, 0.0) + float(line.split()[-1])
    mean = (batch["deconvseg_batch_size_sum"] / max(batch["deconvseg_batch_size_count"], 1)
            if len(batch) == 2 else None)  # the naive baseline has no batches
    return {"rows": rows, "mean_batch_size": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=200, help="per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per concurrency level")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--env", nargs="*", default=[], help="extra KEY=VALUE server settings")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    result = served(args.checkpoint, env, args.concurrency, args.requests, args.max_seconds,
                    size=args.size)
    mean = result["mean_batch_size"]
    print(json.dumps({"env": env, "size": args.size, "results": result["rows"],
                      "mean_batch_size": None if mean is None else round(mean, 2)}))


if __name__ == "__main__":
    main()
