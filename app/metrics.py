"""Prometheus metrics, on a registry of the app's own (so several apps can live in one process).

Work done for a model carries `model` and `version` labels; HTTP requests are counted by route
template and status.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.batcher import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
MODEL = ["model", "version"]


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
                                       [*MODEL, "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("deconvseg_batch_size", "images per model call", MODEL,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("deconvseg_queue_depth", "images waiting for the model",
                                 registry=r)
        self.padding_ratio = Histogram("deconvseg_padding_ratio", "fraction of computed pixels "
                                       "beyond the image's own (tile overlaps)", MODEL,
                                       buckets=(0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
                                       registry=r)
        self.dropped = Counter("deconvseg_dropped", "requests dropped before compute, by reason",
                               ["reason"], registry=r)
        self.ready = Gauge("deconvseg_ready", "1 when the server is loaded and warm", registry=r)
        self.model_ready = Gauge("deconvseg_model_ready",
                                 "1 for each model version that is serving", MODEL, registry=r)
        self.memory_trims = Counter("deconvseg_memory_trims", "freed memory handed back to the "
                                    "OS after a second without work", registry=r)
        self.loads = Counter("deconvseg_model_loads", "model version loads by outcome",
                             ["model", "outcome"], registry=r)

        # Each label set's child, looked up once: `labels()` takes a lock and builds a key, on the
        # event loop for every request. Label values are bounded (routes, statuses, models).
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def stage(self, model: str, version: int, stage: str, seconds: float) -> None:
        self._child(self.stage_seconds, model, str(version), stage).observe(seconds)

    def request(self, route: str, status: int, seconds: float) -> None:
        """One HTTP response: counted by route template and status, timed by route."""
        self._child(self.requests, route, str(status)).inc()
        self._child(self.request_seconds, route).observe(seconds)

    def batch_observer(self, model: str, version: int) -> BatchObserver:
        return BatchObserver(self, model, str(version))

    def answered(self, prefix: str = "/") -> dict[str, int]:
        """Responses since start as "<route> <status>" → count, for routes under `prefix`."""
        return {f"{s.labels['route']} {s.labels['status']}": int(s.value)
                for metric in self.requests.collect() for s in metric.samples
                if s.name.endswith("_total") and s.labels["route"].startswith(prefix)}

    def dropped_counts(self) -> dict[str, int]:
        """Requests dropped before compute since start, by reason → count."""
        return {s.labels["reason"]: int(s.value) for metric in self.dropped.collect()
                for s in metric.samples if s.name.endswith("_total")}

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchObserver:
    """A lane's `on_batch`: batch size, each item's queue time and the batch's compute time."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self.size = metrics.batch_size.labels(model, version)
        self.queue = metrics.stage_seconds.labels(model, version, "queue")
        self.inference = metrics.stage_seconds.labels(model, version, "inference")

    def __call__(self, stats: BatchStats) -> None:
        self.size.observe(stats.batch_size)
        for seconds in stats.queue_seconds:
            self.queue.observe(seconds)
        self.inference.observe(stats.compute_seconds)
