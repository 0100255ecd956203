"""The machinery around a model version's stages: I/O threads, the batcher and its inference
workers, and admission. Shared by every loaded model; knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from app import errors
from app.admission import Admission
from app.allocator import trim
from app.batcher import Batcher, BatcherStopped, DeadlineExceeded, QueueFull
from app.flight import Flight, PredictFailed
from app.io_threads import IOThreads
from app.metrics import Metrics
from app.pipeline import Encoded, Format, ModelVersion, Outputs, Segmented
from app.settings import Settings
from app.workers import ThreadPolicy

log = logging.getLogger("deconvseg.runtime")
T = TypeVar("T")


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics, device: torch.device) -> None:
        self.settings = settings
        self.metrics = metrics
        self.policy = ThreadPolicy(settings.resolved_threads,
                                   settings.resolved_workers(device.type), settings.worker_nice)
        self.batcher = Batcher(self.policy, settings.max_queue,
                               on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
                               on_idle=self._hand_back_memory)
        # Preprocessing is torch (torchvision); in I/O threads it computes single-threaded, so
        # only the inference workers run OpenMP teams (app/workers.py).
        self.io = IOThreads(settings.resolved_io_threads, "io",
                            initializer=lambda: torch.set_num_threads(1))
        cv2.setNumThreads(1)  # OpenCV (app/objects.py) likewise: the I/O threads are the team
        # Every worker may hold a batch while `max_queue` more images wait.
        capacity = settings.max_queue + self.policy.workers * settings.max_batch_size
        self.admission = Admission(capacity, settings.max_queue,
                                   on_refused=lambda reason: metrics.dropped.labels(reason).inc(),
                                   failure=lambda: self.batcher.failed)
        metrics.queue_depth.set_function(lambda: self.batcher.depth)
        metrics.ready.set_function(lambda: float(self.admission.ready))

    def start(self) -> None:
        self.batcher.start()

    def _hand_back_memory(self) -> None:
        """After a second without work: the allocator keeps freed activations for the next
        forward (app/allocator.py); once idle, what a burst left behind goes back to the OS."""
        if trim():
            self.metrics.memory_trims.inc()

    async def stop(self) -> None:
        """Refuse new work, compute what is queued, let responses in flight finish encoding,
        then release the threads."""
        self.admission.draining = True
        timeout = self.settings.request_timeout_s
        await asyncio.to_thread(self.batcher.stop, timeout)
        left = await self.admission.drained(timeout)
        if left:
            log.warning("%d responses still in flight after %g s; stopping anyway", left, timeout)
        await asyncio.to_thread(self.io.shutdown)

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.io.run(fn, *args)

    async def segment(self, version: ModelVersion, data: bytes | np.ndarray, started: float,
                      keep_image: bool = False, probabilities: bool = False,
                      confidence: bool = False) -> Segmented:
        """decode → batch → predict for one admitted image."""
        with self.admission.image():
            seg, _ = await self._fly(version, data, started, None, keep_image=keep_image,
                                     probabilities=probabilities, confidence=confidence)
            return seg

    async def segment_and_encode(self, version: ModelVersion, data: bytes, out: Outputs,
                                 started: float) -> tuple[Encoded, dict[str, float]]:
        """The whole pipeline for one image: the body and the stage timings (ms)."""
        with self.admission.request(), self.admission.image():
            seg, encoded = await self._fly(version, data, started,
                                           partial(version.encode, out=out), **_asks(out))
        assert encoded is not None
        return encoded, seg.timings_ms

    async def _fly(self, version: ModelVersion, data: bytes | np.ndarray, started: float,
                   encode: Callable[[Segmented], T] | None, **asks: bool
                   ) -> tuple[Segmented, T | None]:
        """One image through `app.flight`, its batcher outcomes as the service's errors. The
        request timeout runs from `started` (the upload's end) to predict's answer."""
        remaining = self.settings.request_timeout_s - (time.perf_counter() - started)
        flight = Flight(version, data, self.io, self.batcher, remaining, encode, **asks)
        try:
            return await flight.run()
        except QueueFull:
            raise errors.queue_full(self.settings.max_queue) from None
        except DeadlineExceeded:
            raise errors.TimedOut(
                "deadline_exceeded", "the image was not segmented within the "
                f"{self.settings.request_timeout_s:g} s request timeout; retry later or "
                "send a smaller image") from None
        except BatcherStopped:
            raise errors.not_ready(self.admission.state) from None
        except PredictFailed as exc:
            log.error("inference failed for one image (%r)", version, exc_info=exc.__cause__)
            raise errors.Failed("inference_failed",
                                f"the model failed on this image "
                                f"({type(exc.__cause__).__name__}); it has been logged") from None

    async def _batch_item(self, version: ModelVersion, data: bytes, out: Outputs,
                          started: float) -> dict[str, Any] | errors.ServingError:
        try:
            with self.admission.image():
                seg, doc = await self._fly(version, data, started,
                                           partial(version.encode_item, out=out), **_asks(out))
        except errors.ServingError as exc:
            return exc
        assert doc is not None
        return doc

    async def segment_batch(self, version: ModelVersion, files: Sequence[bytes], out: Outputs,
                            started: float) -> list[dict[str, Any] | errors.ServingError]:
        """Every image through the pipeline at once: each one's document or its error, in
        order (the caller counts the request in flight with `admission.request()`)."""
        return list(await asyncio.gather(*(self._batch_item(version, data, out, started)
                                           for data in files)))


def _asks(out: Outputs) -> dict[str, bool]:
    """What predict and encode need kept or computed for these outputs."""
    return {"keep_image": out.format is Format.overlay, "probabilities": out.probabilities,
            "confidence": out.confidence}
