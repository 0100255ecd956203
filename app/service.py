"""The running service: decode → batch → predict → unbatch → encode, readiness and draining."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
import torch

from app import encode
from app.batcher import Batcher, BatcherStopped, DeadlineExceeded, QueueFull
from app.decode import decode_image
from app.errors import APIError
from app.inference import (
    InferenceOptions,
    Prepared,
    Segmenter,
    resolve_backend,
    resolve_device,
)
from app.metrics import Metrics
from app.settings import Settings
from model.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger("deconvseg.service")
T = TypeVar("T")


class Format(StrEnum):
    json = "json"
    png = "png"
    rle = "rle"
    overlay = "overlay"


@dataclass
class Segmented:
    image: np.ndarray | None  # (H, W, 3) uint8, the EXIF-oriented upload (overlay only)
    mask: np.ndarray  # (H, W) uint8 class indices
    timings_ms: dict[str, float]


@dataclass
class Encoded:
    body: bytes
    media_type: str
    timings_ms: dict[str, float]


def threads_for(threads: int, workers: int, busy: int, queued: int, worker: int = 0) -> int:
    """Torch threads for worker `worker`'s next forward: all of them for worker 0 computing
    alone with nothing waiting (lowest latency), else an equal share (no oversubscription).

    On this 2-core CPU two workers of one thread each served more images/s than one worker of
    two: a team of OpenMP threads waits at every layer for its slowest member, and the decode
    and HTTP work keeps preempting one of them. Only worker 0 ever runs a multi-threaded team:
    once libgomp manages more threads than there are cores it stops spin-waiting between
    parallel regions, which made every forward ~30 % slower here. Masks are the same at any
    thread count (tested).
    """
    alone = worker == 0 and busy <= 1 and queued == 0
    return threads if alone or workers == 1 else max(1, threads // workers)


class Service:
    """Owns the checkpoint, the batcher (and its inference thread) and the I/O threads."""

    def __init__(self, settings: Settings, ckpt: Checkpoint | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.device = resolve_device(settings.device)
        # Threads other than the inference workers compute single-threaded (workers set their
        # own count per forward): an OpenMP team in any other thread would count against the
        # cores and make libgomp throttle the workers' spin-waits (see `threads_for`).
        torch.set_num_threads(1)
        self.ckpt = ckpt or load_checkpoint(settings.checkpoint, device=self.device,
                                            expected_sha256=settings.pinned_sha256)
        stacked = settings.batch_forward == "stacked" or (
            settings.batch_forward == "auto" and self.device.type == "cuda")
        # Tiles go one at a time unless stacking: on this CPU one 512² tile per forward was both
        # faster (60.6 vs 77.9 s for 8192²) and lighter (1.68 vs 2.17 GB peak RSS) than four.
        tile_batch = settings.max_batch_size if stacked else 1
        options = InferenceOptions(settings.resolution, settings.tile_size, settings.tile_overlap,
                                   tile_batch, stacked,
                                   resolve_backend(settings.backend, self.device),
                                   settings.engine)
        self.segmenter = Segmenter(self.ckpt, options, self.device)
        self.io = ThreadPoolExecutor(settings.resolved_io_threads, thread_name_prefix="io")
        self.batcher: Batcher[Prepared, np.ndarray] = Batcher(
            self.predict,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000,
            max_queue=settings.max_queue,
            key=self.segmenter.bucket,
            on_batch=self.metrics.observe_batch,
            on_drop=lambda reason: self.metrics.dropped.labels(reason).inc(),
            workers=settings.resolved_workers(self.device.type),
        )
        self.threads = settings.resolved_threads
        self._thread_state = threading.local()
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.metrics.ready.set_function(lambda: float(self.ready))
        self.warm = False
        self.draining = False
        self._in_flight = 0
        self._admitted = 0  # images decoding, queued or computing
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.warm and not self.draining and self.batcher.alive

    @property
    def state(self) -> str:
        """Why the service is not ready, in words, or "ready"."""
        if self.batcher.failed is not None:
            return "restarting (its inference worker died)"
        if self.draining:
            return "shutting down"
        return "ready" if self.ready else "warming up"

    def predict(self, items: Sequence[Prepared]) -> list[np.ndarray]:
        """The batcher's predict stage (an inference thread)."""
        self._use_threads(threads_for(self.threads, self.batcher.workers, self.batcher.busy,
                                      self.batcher.depth, self.batcher.worker_index()))
        self.metrics.padding_ratio.observe(self.segmenter.padding_ratio(items))
        return self.segmenter.predict(items)

    def _use_threads(self, count: int) -> None:
        """Torch's thread count is per calling thread (OpenMP): set this worker's on change."""
        if getattr(self._thread_state, "threads", None) != count:
            torch.set_num_threads(count)
            self._thread_state.threads = count

    def start(self) -> None:
        """Warm the model up, then start the inference worker (blocking; run in a thread)."""
        t0 = time.perf_counter()
        failed: list[BaseException] = []

        def warm_up() -> None:  # in a thread of its own: its OpenMP team ends with it
            torch.set_num_threads(self.threads)
            try:
                self.segmenter.warm_up(self.settings.max_batch_size)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=warm_up, name="warm-up")
        thread.start()
        thread.join()
        if failed:
            log.error("warm-up failed; the service stays not ready", exc_info=failed[0])
            raise failed[0]
        self.batcher.start()
        self.warm = True
        log.info("model %s (sha256 %s…) warm on %s in %.2f s; ready", self.ckpt.name,
                 self.ckpt.sha256[:12], self.device, time.perf_counter() - t0)

    async def stop(self) -> None:
        """Refuse new work, compute what is queued, let responses in flight finish encoding,
        then release the threads."""
        self.draining = True
        timeout = self.settings.request_timeout_s
        await asyncio.to_thread(self.batcher.stop, timeout)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d responses still in flight after %g s; stopping anyway",
                        self._in_flight, timeout)
        await asyncio.to_thread(self.io.shutdown, True)
        answered = {f"{sample.labels['route']} {sample.labels['status']}": int(sample.value)
                    for metric in self.metrics.requests.collect() for sample in metric.samples
                    if sample.name.endswith("_total")
                    and sample.labels["route"].startswith("/segment")}
        log.info("drained; responses since start by route and status: %s",
                 json.dumps(answered, sort_keys=True))

    @asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        """Count a request's pipeline as in flight until its response body exists."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    # --- stages -------------------------------------------------------------------------------

    def _decode(self, data: bytes) -> tuple[np.ndarray, Prepared]:
        image = decode_image(data, self.settings.max_pixels, self.settings.max_side)
        return image, self.segmenter.prepare(image)

    def check_capacity(self) -> None:
        """503 queue_full (counted as a drop) once every worker has a batch and `max_queue` more
        images wait (decoding or queued): refusing before decoding keeps a 503 cheap and the
        wait of admitted images bounded."""
        limit = self.settings.max_queue + self.batcher.workers * self.settings.max_batch_size
        if self._admitted >= limit:
            self.metrics.dropped.labels("queue_full").inc()
            raise self._queue_full()

    def _queue_full(self) -> APIError:
        return APIError(503, "queue_full",
                        f"the server is at capacity ({self.settings.max_queue} images "
                        "queued); retry after the Retry-After delay", {"Retry-After": "1"})

    async def segment(self, data: bytes, started: float, keep_image: bool = False) -> Segmented:
        """decode → batch → predict; raises APIError for anything the client can act on."""
        if not self.ready:
            raise APIError(503, "not_ready", f"the model is {self.state}; retry shortly",
                           {"Retry-After": "1"})
        self.check_capacity()
        self._admitted += 1
        try:
            return await self._segment(data, started, keep_image)
        finally:
            self._admitted -= 1

    async def _segment(self, data: bytes, started: float, keep_image: bool) -> Segmented:
        t0 = time.perf_counter()
        image, prepared = await self.run_io(self._decode, data)
        if not keep_image:
            image = None  # free the pixels while the image waits for the model
        decode_s = time.perf_counter() - t0
        self.metrics.stage_seconds.labels("decode").observe(decode_s)
        remaining = self.settings.request_timeout_s - (time.perf_counter() - started)
        try:
            mask, queued, compute = await self.batcher.submit(prepared, max(remaining, 0.001))
        except QueueFull:
            raise self._queue_full() from None
        except DeadlineExceeded:
            raise APIError(504, "deadline_exceeded",
                           f"the image was not segmented within the "
                           f"{self.settings.request_timeout_s:g} s request timeout; retry "
                           "later or send a smaller image") from None
        except BatcherStopped:
            raise APIError(503, "not_ready", "the inference worker is not running; retry "
                           "shortly", {"Retry-After": "1"}) from None
        except Exception as exc:
            log.exception("inference failed for one image")
            raise APIError(500, "inference_failed",
                           f"the model failed on this image ({type(exc).__name__}); "
                           "it has been logged") from None
        timings = {"decode": decode_s, "queue": queued, "inference": compute}
        return Segmented(image, mask, {k: round(v * 1000, 3) for k, v in timings.items()})

    def document(self, seg: Segmented, fmt: Format) -> dict[str, Any]:
        """The JSON body for `json` or `rle`, without timings."""
        ckpt = self.ckpt
        height, width = seg.mask.shape
        doc: dict[str, Any] = {"width": width, "height": height, "classes": ckpt.classes}
        if fmt is Format.rle:
            doc["rle"] = encode.rle_by_class(seg.mask, ckpt.classes)
        else:
            doc["mask"] = {"encoding": "png", "data": encode.mask_png_base64(seg.mask,
                                                                             ckpt.palette)}
        doc["areas"] = encode.areas(seg.mask, ckpt.classes)
        doc["model"] = {"name": ckpt.name, "sha256": ckpt.sha256}
        return doc

    def _timed_encode(self, seg: Segmented, produce: Callable[[], T]) -> T:
        """Run an encode step (I/O thread), recording its time in the metrics and `seg`."""
        t0 = time.perf_counter()
        body = produce()
        seconds = time.perf_counter() - t0
        self.metrics.stage_seconds.labels("encode").observe(seconds)
        seg.timings_ms["encode"] = round(seconds * 1000, 3)
        return body

    def _encode(self, seg: Segmented, fmt: Format) -> tuple[bytes, str]:
        def produce() -> bytes | dict[str, Any]:
            if fmt is Format.png:
                return encode.mask_png(seg.mask, self.ckpt.palette)
            if fmt is Format.overlay:
                return encode.overlay_png(seg.image, seg.mask, self.ckpt.palette)
            return self.document(seg, fmt)

        body = self._timed_encode(seg, produce)
        if isinstance(body, dict):
            body["timings_ms"] = seg.timings_ms
            return json.dumps(body).encode(), "application/json"
        return body, "image/png"

    async def segment_and_encode(self, data: bytes, fmt: Format, started: float) -> Encoded:
        """The whole pipeline for one image."""
        async with self._tracked():
            seg = await self.segment(data, started, keep_image=fmt is Format.overlay)
            body, media_type = await self.run_io(self._encode, seg, fmt)
        return Encoded(body, media_type, seg.timings_ms)

    async def _batch_item(self, filename: str | None, data: bytes, fmt: Format,
                          started: float) -> dict[str, Any]:
        try:
            seg = await self.segment(data, started)
        except APIError as exc:
            return {"filename": filename, "status": exc.status,
                    "error": {"code": exc.code, "message": exc.message}}
        doc = await self.run_io(self._timed_encode, seg, lambda: self.document(seg, fmt))
        return {"filename": filename, "status": 200, "result": doc | {"timings_ms":
                                                                       seg.timings_ms}}

    async def segment_batch(self, files: Sequence[tuple[str | None, bytes]], fmt: Format,
                            started: float) -> bytes:
        """Every image through the pipeline at once; a JSON list in order, errors per item."""
        async with self._tracked():
            items = await asyncio.gather(*(self._batch_item(name, data, fmt, started)
                                           for name, data in files))
            return await self.run_io(lambda: json.dumps(items).encode())
