"""Overload and shutdown on loopback: `python -m bench.overload` (about a minute; not in `bench`).

One real server (`python -m app`, log in a file), one raw asyncio HTTP client in this process
(a new connection per request, so the client costs little CPU next to the server):

1. unloaded: sequential requests → p50/p99 latency; capacity: closed loop → completed req/s;
2. burst: open-loop arrivals at `--factor` × capacity for `--seconds`; every status is counted,
   503s need `Retry-After`, admitted p99 is compared with the unloaded p99, RSS is sampled;
3. recovery: RSS after the burst against the steady state before it;
4. SIGTERM under load: readiness, exit status and time, and the server's own count of
   `/segment` responses (logged when it drains) against the responses this client received.

Writes bench/results/overload.json and overload.md (`--out` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import BOUNDARY, multipart_body, percentile, scene_jpeg, start_server, stop

RESULTS = Path(__file__).parent / "results"
DRAINED = re.compile(r"drained; responses since start by route and status: (\{.*\})")


def rss_mb(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) / 1024


def multipart_request(base: str, image: bytes, path: str = "/segment") -> bytes:
    """A complete HTTP/1.1 POST with one `file` part, ready to write to a socket."""
    host = base.removeprefix("http://")
    body = multipart_body(image)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class Outcome:
    status: int  # 0: the connection failed before a response
    seconds: float
    retry_after: bool
    error: str = ""


async def send(base: str, request: bytes, timeout_s: float = 60) -> Outcome:
    """One request on a fresh connection; never raises."""
    host, port = base.removeprefix("http://").split(":")
    t0 = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = re.search(r"content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        return Outcome(int(head.split()[1]), time.perf_counter() - t0, "retry-after:" in head)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
        return Outcome(0, time.perf_counter() - t0, False, type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()


@dataclass
class Tally:
    """Every /segment outcome this client saw, by status (0 = no response)."""

    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> Outcome:
        self.statuses[outcome.status] += 1
        if outcome.error:
            self.errors[outcome.error] += 1
        return outcome


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


async def closed_loop(base: str, requests: list[bytes], workers: int, seconds: float,
                      tally: Tally) -> list[Outcome]:
    """`workers` clients, each sending its next request when the last one is answered (or,
    after a 503, when its Retry-After has passed, as a well-behaved client would)."""
    outcomes: list[Outcome] = []
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            outcome = tally.add(await send(base, requests[i % len(requests)]))
            outcomes.append(outcome)
            if outcome.status == 503:
                await asyncio.sleep(min(1.0, max(0.0, stop_at - time.perf_counter())))
            i += workers

    await asyncio.gather(*(worker(k) for k in range(workers)))
    return outcomes


async def open_loop(base: str, requests: list[bytes], rate: float, seconds: float,
                    tally: Tally) -> tuple[list[Outcome], float]:
    """Arrivals at `rate` per second whatever the answers; returns outcomes and the rate sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(base, requests[i % len(requests)])))
    sent_rate = len(tasks) / max(loop.time() - start, 1e-9)
    return [tally.add(o) for o in await asyncio.gather(*tasks)], sent_rate


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


def server_counts(log_text: str) -> dict[int, int] | None:
    """The server's own count of /segment responses by status, from its drain log line."""
    found = DRAINED.search(log_text)
    if found is None:
        return None
    counts = json.loads(found.group(1))
    return {int(key.split()[1]): n for key, n in counts.items() if key.split()[0] == "/segment"}


async def sigterm_under_load(proc: subprocess.Popen, base: str, requests: list[bytes],
                             workers: int, load_s: float, tally: Tally) -> dict:
    """Closed-loop load; SIGTERM after `load_s`; each worker stops at its first refusal."""
    t_sig = 0.0
    after: list[Outcome] = []  # answered after SIGTERM was sent

    async def worker(k: int) -> None:
        i = k
        while True:
            outcome = tally.add(await send(base, requests[i % len(requests)]))
            if t_sig:
                after.append(outcome)
            if t_sig and outcome.status != 200:
                return  # refused (503) or the listener has closed
            if outcome.status == 503:
                await asyncio.sleep(1)  # Retry-After
            i += workers

    tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
    await asyncio.sleep(load_s)
    t_sig = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    ready_after = await send(base, b"GET /readyz HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
    await asyncio.gather(*tasks)
    code = await asyncio.to_thread(proc.wait, 120)
    return {"exit_status": code, "exit_s": round(time.perf_counter() - t_sig, 2),
            "readyz_after_sigterm": ready_after.status or f"refused ({ready_after.error})",
            "answered_200_after_sigterm": sum(o.status == 200 for o in after),
            "refused_503_after_sigterm": sum(o.status == 503 for o in after),
            "no_response_after_sigterm": sum(o.status == 0 for o in after)}


async def run(args: argparse.Namespace, proc: subprocess.Popen, base: str, log: Path) -> dict:
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
    counts = server_counts(log.read_text())
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
        log = Path(tmp) / "server.log"
        proc, base = start_server(env, log=log)
        try:
            result = asyncio.run(run(args, proc, base, log))
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
