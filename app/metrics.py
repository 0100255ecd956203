"""Prometheus metrics, on a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.batcher import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("deconvseg_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("deconvseg_request_seconds", "request latency by route",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("deconvseg_stage_seconds",
                                       "time per stage: decode, queue, inference, encode",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("deconvseg_batch_size", "images per model call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("deconvseg_queue_depth", "images waiting for the model",
                                 registry=r)
        self.padding_ratio = Histogram("deconvseg_padding_ratio",
                                       "fraction of computed pixels that are padding",
                                       buckets=(0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
                                       registry=r)
        self.dropped = Counter("deconvseg_dropped", "requests dropped before compute, by reason",
                               ["reason"], registry=r)
        self.ready = Gauge("deconvseg_ready", "1 when the model is loaded and warm", registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.batch_size)
        for q in stats.queue_seconds:
            self.stage_seconds.labels("queue").observe(q)
        self.stage_seconds.labels("inference").observe(stats.compute_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
