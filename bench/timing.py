"""The one timing loop of the in-process benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], seconds: float = 0.0, runs: int = 5,
          warm_up: int = 3) -> list[float]:
    """Seconds per call of `fn`, after `warm_up` untimed calls: calls until `seconds` have
    passed and at least `runs` were timed."""
    for _ in range(warm_up):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def random_pixels(batch: int, height: int, width: int) -> torch.Tensor:
    """A uint8 (batch, 3, height, width) batch in the channels-last layout uploads arrive in:
    what `Segmenter.forward` is fed."""
    return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
