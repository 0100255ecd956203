"""The running service: model, batcher, I/O threads, metrics and readiness, in one object."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from app.batcher import Batcher, BatcherStopped, DeadlineExceeded, QueueFull
from app.decode import DecodeLimits, decode_image
from app.errors import APIError
from app.inference import InferenceOptions, Prepared, Segmenter, resolve_device
from app.metrics import Metrics
from app.settings import Settings
from model.checkpoint import Checkpoint, load_checkpoint

log = logging.getLogger("deconvseg.service")


@dataclass
class Segmented:
    image: np.ndarray  # (H, W, 3) uint8, EXIF-oriented upload
    mask: np.ndarray  # (H, W) uint8 class indices
    timings_ms: dict[str, float]


class Service:
    def __init__(self, settings: Settings, ckpt: Checkpoint | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.device = resolve_device(settings.device)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.ckpt = ckpt or load_checkpoint(settings.checkpoint, device=self.device,
                                            expected_sha256=settings.checkpoint_sha256)
        options = InferenceOptions(settings.resolution, settings.resize_to, settings.tile_size,
                                   settings.tile_overlap, settings.tile_batch_size)
        self.segmenter = Segmenter(self.ckpt, options, self.device,
                                   observe_padding=self.metrics.padding_ratio.observe)
        self.limits = DecodeLimits(settings.max_pixels, settings.max_side)
        self.io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
        self.batcher: Batcher[Prepared, np.ndarray] = Batcher(
            self.segmenter.predict,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000,
            max_queue=settings.max_queue,
            key=self.segmenter.bucket,
            on_batch=self.metrics.observe_batch,
            on_drop=lambda reason: self.metrics.dropped.labels(reason).inc(),
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.warm = False
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.warm and not self.draining and self.batcher.alive

    def start(self) -> None:
        """Warm the model up on the shapes it will see, then start the worker (blocking)."""
        t0 = time.perf_counter()
        self.segmenter.warm_up(self.settings.max_batch_size)
        self.batcher.start()
        self.warm = True
        self.metrics.ready.set_function(lambda: float(self.ready))
        log.info("model %s (%s…) warm on %s in %.2fs; ready", self.ckpt.name,
                 self.ckpt.sha256[:12], self.device, time.perf_counter() - t0)

    def stop(self) -> None:
        self.draining = True
        self.batcher.stop(timeout=self.settings.shutdown_timeout_s)
        self.io.shutdown(wait=True, cancel_futures=False)

    async def run_io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def _decode_prepare(self, data: bytes) -> tuple[np.ndarray, Prepared]:
        image = decode_image(data, self.limits)
        return image, self.segmenter.prepare(image)

    async def segment(self, data: bytes, started: float) -> Segmented:
        """Decode → batch → predict; raises APIError for anything the client can fix."""
        if not self.ready:
            raise APIError(503, "not_ready", "the model is not ready (warming up or draining); "
                           "retry shortly", {"Retry-After": "1"})
        t0 = time.perf_counter()
        image, prepared = await self.run_io(self._decode_prepare, data)
        decode_ms = (time.perf_counter() - t0) * 1000
        self.metrics.stage_seconds.labels("decode").observe(decode_ms / 1000)
        remaining = self.settings.request_timeout_s - (time.perf_counter() - started)
        try:
            mask, queued, compute = await self.batcher.submit(prepared, max(remaining, 0.001))
        except QueueFull:
            raise APIError(503, "overloaded",
                           f"the server is at capacity ({self.settings.max_queue} images "
                           f"queued); retry after a second", {"Retry-After": "1"}) from None
        except DeadlineExceeded:
            raise APIError(504, "timeout",
                           f"the image was not processed within the "
                           f"{self.settings.request_timeout_s:g} s request timeout") from None
        except BatcherStopped:
            raise APIError(503, "not_ready", "the inference worker is not running; retry on "
                           "another replica", {"Retry-After": "5"}) from None
        except Exception as exc:
            log.exception("inference failed for one image")
            raise APIError(500, "inference_failed",
                           f"the model failed on this image ({type(exc).__name__})") from None
        return Segmented(image, mask, {"decode": round(decode_ms, 3),
                                       "queue": round(queued * 1000, 3),
                                       "inference": round(compute * 1000, 3), "encode": 0.0})
