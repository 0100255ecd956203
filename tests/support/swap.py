"""A model-version swap under load, against a running server: the test of it
(tests/e2e/test_model_swap.py) and its measurement (python -m bench.swap) share this."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support.server import rss_mb, scene_jpeg

ADMIN_KEY = "bench-admin"


@dataclass
class Reply:
    sent: float
    done: float
    status: int
    version: str


async def _post_until(client: httpx.AsyncClient, image: bytes, until: float,
                      replies: list[Reply]) -> None:
    while time.monotonic() < until:
        sent = time.monotonic()
        try:
            r = await client.post("/segment?format=png", files={"file": ("a.jpg", image)})
            status, version = r.status_code, r.headers.get("x-model-version", "")
        except httpx.HTTPError as exc:
            status, version = 0, type(exc).__name__
        replies.append(Reply(sent, time.monotonic(), status, version))


async def _sample_rss(pid: int, samples: list[tuple[float, float]], until: float) -> None:
    while time.monotonic() < until:
        samples.append((time.monotonic(), rss_mb(pid)))
        await asyncio.sleep(0.1)


async def _state(client: httpx.AsyncClient, model: str, version: int) -> str:
    models = (await client.get("/models")).json()
    return next(v["state"] for m in models if m["name"] == model
                for v in m["versions"] if v["version"] == version)


async def swap_under_load(base: str, pid: int, repo: Path, model: str, weights: Path,
                          clients: int, seconds: float, swap_at: float,
                          image_size: int = 256) -> dict[str, Any]:
    """Load on `base` for `seconds`; at `swap_at` s copy `weights` in as version 2 and load it.
    The server must serve `repo` with version 1 of `model` and the admin key ADMIN_KEY."""
    image = scene_jpeg(image_size, 0)
    replies: list[Reply] = []
    rss: list[tuple[float, float]] = []
    start = time.monotonic()
    until = start + seconds
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        load = [asyncio.create_task(_post_until(client, image, until, replies))
                for _ in range(clients)]
        sampler = asyncio.create_task(_sample_rss(pid, rss, until))
        await asyncio.sleep(swap_at)
        (repo / model / "2").mkdir()
        shutil.copy(weights, repo / model / "2" / "model.pt")
        load_started = time.monotonic()
        r = await client.post(f"/v2/repository/models/{model}/load",
                              headers={"X-Admin-Key": ADMIN_KEY})
        switched = time.monotonic()
        load_reply = r.json()
        while await _state(client, model, 1) != "unavailable" and time.monotonic() < until:
            await asyncio.sleep(0.05)
        unloaded = time.monotonic()
        await asyncio.gather(*load, sampler)
        final_state = await _state(client, model, 1)
    steady = [r.done - r.sent for r in replies if r.done < load_started]
    swapping = [r.done - r.sent for r in replies if load_started <= r.sent <= unloaded + 1]
    one_version = [mb for t, mb in rss if t < load_started]
    after = [mb for t, mb in rss if t > unloaded + 1]
    p99_steady = float(np.percentile(steady, 99)) * 1000 if steady else 0.0
    p99_swap = float(np.percentile(swapping, 99)) * 1000 if swapping else 0.0
    return {
        "clients": clients, "seconds": seconds, "requests": len(replies),
        "load_status": r.status_code, "load_reply": load_reply,
        "load_seconds": round(switched - load_started, 3),
        "unloaded_after_switch_s": round(unloaded - switched, 3),
        "statuses": dict(Counter(str(x.status) for x in replies)),
        "non_200": sum(x.status != 200 for x in replies),
        "versions": dict(Counter(x.version for x in replies)),
        "version_1_sent_after_switch": sum(x.version == "1" and x.sent > switched
                                           for x in replies),
        "version_1_state_at_end": final_state,
        "p99_ms": {"steady": round(p99_steady, 1), "during_swap": round(p99_swap, 1),
                   "ratio": round(p99_swap / p99_steady, 2) if p99_steady else None},
        "rss_mb": {"one_version": round(max(one_version, default=0), 1),
                   "peak": round(max((mb for _, mb in rss), default=0), 1),
                   "after_unload": round(max(after, default=0), 1)},
    }
