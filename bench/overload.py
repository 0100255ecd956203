"""Overload and shutdown on loopback: `python -m bench.overload` (about a minute; not in `bench`).

One real server (`python -m app`, log in a file), one raw asyncio HTTP client in this process
(a new connection per request, so the client costs little CPU next to the server):

1. unloaded: sequential requests → p50/p99 latency; capacity: closed loop → completed req/s;
2. burst: open-loop arrivals at `--factor` × capacity for `--seconds`; every status is counted,
   503s need `Retry-After`, admitted p99 is compared with the unloaded p99, RSS is sampled;
3. recovery: RSS after the burst against the steady state before it;
4. SIGTERM under load: readiness, exit status and time, and the server's own count of
   `/segment` responses (its drain report, `DECONVSEG_DRAIN_REPORT`) against the responses
   this client received.

Writes bench/results/overload.json and overload.md (`--out` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.load import percentile
from tests.support.server import (
    Outcome,
    Tally,
    closed_loop,
    multipart_request,
    open_loop,
    rss_mb,
    scene_jpeg,
    server_counts,
    sigterm_under_load,
    start_server,
    stop,
)

RESULTS = Path(__file__).parent / "results"


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


def summarize_burst(outcomes: list[Outcome]) -> dict:
    ok = [o.seconds for o in outcomes if o.status == 200]
    refused = [o for o in outcomes if o.status == 503]
    return {"requests": len(outcomes),
            "statuses": dict(Counter(o.status for o in outcomes)),
            "other_than_200_or_503": sum(o.status not in (200, 503) for o in outcomes),
            "all_503_have_retry_after": all(o.retry_after for o in refused),
            "admitted_p50_ms": ms(ok, 50), "admitted_p99_ms": ms(ok, 99),
            "refused_p50_ms": ms([o.seconds for o in refused], 50),
            "refused_p99_ms": ms([o.seconds for o in refused], 99)}


async def sample_rss(pid: int, samples: list[float]) -> None:
    """Append the server's RSS every 50 ms until cancelled."""
    while True:
        samples.append(rss_mb(pid))
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace, proc: subprocess.Popen, base: str,
              report: Path) -> dict:
    images = [scene_jpeg(args.size, i) for i in range(8)]
    requests = [multipart_request(base, image) for image in images]
    tally = Tally()
    await closed_loop(base, requests, 2, 2, tally)  # warm the process and the allocator
    unloaded = [o.seconds for o in await closed_loop(base, requests, 1, args.unloaded_s, tally)]
    busy = await closed_loop(base, requests, args.workers, args.capacity_s, tally)
    capacity = sum(o.status == 200 for o in busy) / args.capacity_s
    await asyncio.sleep(1)
    steady = rss_mb(proc.pid)
    rate = args.factor * capacity
    samples: list[float] = []
    sampler = asyncio.create_task(sample_rss(proc.pid, samples))
    outcomes, sent_rate = await open_loop(base, requests, rate, args.seconds, tally)
    sampler.cancel()
    await asyncio.sleep(args.settle_s)
    after = rss_mb(proc.pid)
    burst = summarize_burst(outcomes)
    burst |= {"offered_per_s": round(rate, 1), "sent_per_s": round(sent_rate, 1),
              "seconds": args.seconds,
              "admitted_p99_over_unloaded_p99": round(burst["admitted_p99_ms"]
                                                      / ms(unloaded, 99), 2)}
    shutdown = await sigterm_under_load(proc, base, requests, args.workers, 2, tally)
    counts = server_counts(report)
    client = {status: n for status, n in tally.statuses.items() if status}
    shutdown |= {"server_answered": counts, "client_received": client,
                 "client_no_response": tally.statuses.get(0, 0),
                 "client_errors": dict(tally.errors),
                 "accepted_but_lost": None if counts is None
                 else sum(counts.values()) - sum(client.values())}
    return {"unloaded": {"requests": len(unloaded), "p50_ms": ms(unloaded, 50),
                         "p99_ms": ms(unloaded, 99)},
            "capacity_per_s": round(capacity, 1), "burst": burst,
            "rss_mb": {"steady": round(steady, 1),
                       "peak_in_burst": round(max(samples, default=steady), 1),
                       "after": round(after, 1), "after_over_steady": round(after / steady, 3)},
            "shutdown": shutdown}


def markdown(result: dict) -> str:
    b, r, s = result["burst"], result["rss_mb"], result["shutdown"]
    rows = [
        ("unloaded p50 / p99", f"{result['unloaded']['p50_ms']} / {result['unloaded']['p99_ms']} "
                               f"ms ({result['unloaded']['requests']} sequential requests)"),
        ("capacity", f"{result['capacity_per_s']} req/s ({result['workers']} clients)"),
        ("burst", f"{b['offered_per_s']} req/s offered ({result['factor']:g}× capacity), "
                  f"{b['sent_per_s']} sent, for {b['seconds']} s: {b['requests']} requests"),
        ("burst statuses", ", ".join(f"{k}: {v}" for k, v in sorted(b["statuses"].items()))
         + f"; other than 200/503: {b['other_than_200_or_503']}; every 503 has Retry-After: "
           f"{b['all_503_have_retry_after']}"),
        ("503 latency p50 / p99", f"{b['refused_p50_ms']} / {b['refused_p99_ms']} ms"),
        ("admitted p50 / p99", f"{b['admitted_p50_ms']} / {b['admitted_p99_ms']} ms = "
                               f"{b['admitted_p99_over_unloaded_p99']}× the unloaded p99"),
        ("RSS steady / burst peak / after", f"{r['steady']} / {r['peak_in_burst']} / {r['after']}"
                                            f" MB (after = {r['after_over_steady']}× steady)"),
        ("SIGTERM under load", f"exit {s['exit_status']} in {s['exit_s']} s; /readyz after: "
                               f"{s['readyz_after_sigterm']}; {s['answered_200_after_sigterm']} "
                               f"answered 200 after the signal, "
                               f"{s['refused_503_after_sigterm']} refused 503, "
                               f"{s['no_response_after_sigterm']} not connected"),
        ("responses: server / client", f"{s['server_answered']} / {s['client_received']}; "
                                       f"accepted but lost: {s['accepted_but_lost']}"),
    ]
    head = f"`python -m bench.overload {result['argv']}`; server env {result['env']}\n\n"
    return head + "| | |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--size", type=int, default=256, help="JPEG scene side")
    parser.add_argument("--factor", type=float, default=10, help="burst rate / capacity")
    parser.add_argument("--seconds", type=float, default=10, help="burst length")
    parser.add_argument("--workers", type=int, default=4, help="clients for capacity/SIGTERM")
    parser.add_argument("--unloaded-s", type=float, default=4)
    parser.add_argument("--capacity-s", type=float, default=6)
    parser.add_argument("--settle-s", type=float, default=3, help="idle before RSS 'after'")
    parser.add_argument("--env", nargs="*", default=["DECONVSEG_MAX_BATCH_SIZE=1",
                                                     "DECONVSEG_MAX_QUEUE=1",
                                                     "DECONVSEG_WORKERS=1", "DECONVSEG_THREADS=1"],
                        help="server settings KEY=VALUE (default: latency-bound, one image "
                        "computing and one waiting, a core left for HTTP; `--env` alone: the "
                        "shipped defaults)")
    parser.add_argument("--out", type=Path, default=RESULTS / "overload")
    args = parser.parse_args()
    env = {"DECONVSEG_CHECKPOINT": args.checkpoint, "DECONVSEG_DEVICE": "cpu",
           "DECONVSEG_LOG_LEVEL": "info", **dict(kv.split("=", 1) for kv in args.env)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "drain.json"
        proc, base = start_server({**env, "DECONVSEG_DRAIN_REPORT": str(report)},
                                  log=Path(tmp) / "server.log")
        try:
            result = asyncio.run(run(args, proc, base, report))
        finally:
            stop(proc)
    result |= {"argv": " ".join(sys.argv[1:]), "env": env,
               "factor": args.factor, "workers": args.workers}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
