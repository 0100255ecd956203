"""Helpers for a real server process (`python -m app`) on loopback, shared by the tests that
start one and by the benchmarks in bench/ (which import them from here).

- starting and stopping it: `free_port`, `wait_ready`, `start_server`, `stop`;
- what to send it: `scene_jpeg`, `multipart_body`, `multipart_request`;
- a raw asyncio client that never raises (`send` → `Outcome`), counting what it saw (`Tally`),
  closed- and open-loop load, SIGTERM under load, and the server's RSS;
- its drain summary (`DECONVSEG_DRAIN_REPORT`): `drain_report`, `server_counts`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from model.data import SyntheticScenes

# --- the process ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, base: str, within_s: float,
               output: Callable[[], str] = str, path: str = "/readyz") -> bool:
    """Poll `base` + `path` until 200 (True) or `within_s` passes (False); raises if the process
    exits first, with the tail of `output()`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:  # a real process over the network: nothing to wait on
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {output()[-2000:]}")
        try:
            if httpx.get(f"{base}{path}", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def start_server(env: dict[str, str], module: str = "app", log: Path | None = None,
                 ready_within_s: float = 120) -> tuple[subprocess.Popen, str]:
    """`python -m <module>` on a free loopback port, returned once /readyz is 200; its output
    goes to `log` when given (else to ours). The caller must `stop` it, also on failure."""
    port = free_port()
    out = open(log, "w") if log else None  # noqa: SIM115 (the child keeps writing to it)
    try:
        proc = subprocess.Popen([sys.executable, "-m", module], stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                env={**os.environ, "DECONVSEG_HOST": "127.0.0.1", **env,
                                     "DECONVSEG_PORT": str(port)})
    finally:
        if out:
            out.close()
    base = f"http://127.0.0.1:{port}"
    output = log.read_text if log else str
    if wait_ready(proc, base, ready_within_s, output):
        return proc, base
    stop(proc)
    raise RuntimeError(f"server not ready in {ready_within_s:g} s: {output()[-2000:]}")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM, then SIGKILL after 60 s; the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def rss_mb(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found is not None, f"no VmRSS for process {pid}"
    return int(found.group(1)) / 1024


# --- its drain summary ------------------------------------------------------------------------


def drain_report(path: Path) -> dict[str, Any] | None:
    """What the server wrote to `DECONVSEG_DRAIN_REPORT` when it drained:
    {"answered": {"<route> <status>": n}, "dropped": {reason: n}}; None if it wrote nothing."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def server_counts(path: Path, route: str = "/segment") -> dict[int, int] | None:
    """The server's own count of `route` responses by status, from its drain report."""
    report = drain_report(path)
    if report is None:
        return None
    counts: dict[int, int] = {}
    for key, n in report["answered"].items():  # "<route> <status>"
        where, status = key.rsplit(" ", 1)
        if where == route:
            counts[int(status)] = n
    return counts


# --- what to send -----------------------------------------------------------------------------


def scene_jpeg(size: int, index: int) -> bytes:
    """A synthetic scene (objects on a background) of `size`², as a quality-90 JPEG."""
    image, _ = SyntheticScenes(index + 1, size=size, seed=7).render(index)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


BOUNDARY = "deconvseg-bench-7f3a"


def multipart_body(jpeg: bytes) -> bytes:
    """One `file` part, as curl -F or httpx files= would send it."""
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"scene.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + jpeg + (
        f"\r\n--{BOUNDARY}--\r\n").encode()


def multipart_request(base: str, image: bytes, path: str = "/segment") -> bytes:
    """A complete HTTP/1.1 POST with one `file` part, ready to write to a socket."""
    host = base.removeprefix("http://")
    body = multipart_body(image)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# --- a raw client -----------------------------------------------------------------------------


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


def memory_trims(base: str) -> float:
    """How often the server has handed freed memory back (deconvseg_memory_trims_total)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return next((float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("deconvseg_memory_trims_total ")), 0.0)


def settled(base: str, before: float, within_s: float = 20) -> None:
    """Until the server has handed memory back after a quiet second (its trim counter moved
    past `before`); AssertionError if it never does within `within_s`."""
    end = time.monotonic() + within_s
    while memory_trims(base) <= before:
        assert time.monotonic() < end, "the server never went quiet"
        time.sleep(0.1)
