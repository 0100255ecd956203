"""One loaded model version as a short list of stages with no HTTP inside (LitServe's shape):

    decode (I/O thread) → predict (inference worker, batched) → encode (I/O thread)

Each stage raises domain errors (`app.errors`); `app.flight` moves an image between the threads,
`app.runtime` holds the threads and admission, and `app.responses` turns errors into status
codes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
import torch

from app import encode
from app.batcher import Lane
from app.decode import check_pixels, decode_image
from app.errors import InvalidInput, TooLarge
from app.formats import INCLUDE_FORMATS, INCLUDES
from app.inference import InferenceOptions, Prepared, Segmenter, resolve_backend
from app.metrics import Metrics
from app.model_config import ServingOptions
from app.objects import DEFAULT_TOLERANCE, feature_collection, find_objects
from app.workers import WorkerContext, in_own_thread, use_threads
from model.checkpoint import Checkpoint


class Format(StrEnum):
    json = "json"  # the mask as base64 PNG, with what `include` asks for
    png = "png"  # the palette PNG itself
    rle = "rle"  # COCO RLE per class, with what `include` asks for
    overlay = "overlay"  # the upload blended with the mask, PNG
    npy = "npy"  # the uint8 label mask as a .npy file
    objects = "objects"  # JSON: the objects (no mask), with what `include` asks for
    geojson = "geojson"  # the objects as a GeoJSON FeatureCollection


JSON_FORMATS = tuple(Format(name) for name in INCLUDE_FORMATS)  # `include` applies to them
MEDIA_TYPES = {Format.png: "image/png", Format.overlay: "image/png",
               Format.npy: "application/x-npy", Format.geojson: "application/geo+json"}
# Sent gzip-compressed when the client accepts it (PNG is compressed already).
COMPRESSIBLE = (Format.json, Format.rle, Format.objects, Format.geojson, Format.npy)
MIN_COMPRESSED_BYTES = 1024


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip (RFC 9110: a coding with q=0 is refused)."""
    for item in (accept_encoding or "").lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


@dataclass(frozen=True)
class Outputs:
    """What a request asks to get back."""

    format: Format = Format.json
    include: frozenset[str] = field(default_factory=frozenset)
    min_area: int = 1  # pixels: smaller objects are left out
    tolerance: float = DEFAULT_TOLERANCE  # px: polygon simplification
    compressed_rle: bool = True
    gzip: bool = False  # the client accepts Content-Encoding: gzip

    @classmethod
    def parse(cls, fmt: Format, include: str | None = None, **options: Any) -> Outputs:
        """From the query: `include` is a comma-separated list of INCLUDES, for the JSON
        formats only (else InvalidInput)."""
        names = frozenset(n.strip() for n in (include or "").split(",") if n.strip())
        unknown = sorted(names - set(INCLUDES))
        if unknown:
            raise InvalidInput("invalid_include", f"include={','.join(unknown)} is not known; "
                               f"include takes a comma-separated list of {', '.join(INCLUDES)}")
        if names and fmt not in JSON_FORMATS:
            raise InvalidInput("invalid_include", f"include applies to format="
                               f"{', '.join(JSON_FORMATS)}, not format={fmt}")
        return cls(fmt, names, **options)

    @property
    def objects(self) -> bool:
        return "objects" in self.include or self.format in (Format.objects, Format.geojson)

    @property
    def confidence(self) -> bool:
        """Computed for the `confidence` output and for the objects' scores."""
        return "confidence" in self.include or self.objects

    @property
    def probabilities(self) -> bool:
        return "probabilities" in self.include


@dataclass(frozen=True)
class Limits:
    max_pixels: int
    max_side: int
    max_probability_pixels: int


@dataclass(frozen=True)
class Encoded:
    body: bytes
    media_type: str
    content_encoding: str | None = None


@dataclass
class Prediction:
    mask: np.ndarray  # (H, W) uint8 class indices
    probabilities: np.ndarray | None = None  # (K, H, W) float16, when asked for
    confidence: np.ndarray | None = None  # (H, W) uint8, top probability × 255, when asked for


@dataclass
class Segmented:
    image: np.ndarray | None  # (H, W, 3) uint8, the EXIF-oriented upload (overlay only)
    mask: np.ndarray  # (H, W) uint8 class indices
    timings_ms: dict[str, float]
    probabilities: np.ndarray | None = None  # (K, H, W) float16, when asked for
    confidence: np.ndarray | None = None  # (H, W) uint8, when asked for


class ModelVersion:
    """A checkpoint built for serving: its network frozen, its lane in the batcher."""

    def __init__(self, name: str, number: int, ckpt: Checkpoint, options: ServingOptions,
                 device: torch.device, limits: Limits, metrics: Metrics) -> None:
        self.name, self.number, self.ckpt, self.options = name, number, ckpt, options
        self.limits = limits
        self.metrics = metrics
        stacked = options.batch_forward == "stacked" or (
            options.batch_forward == "auto" and device.type == "cuda")
        # Tiles go one at a time unless stacking: on this CPU one 512² tile per forward was both
        # faster and lighter than four (bench/results).
        self.segmenter = Segmenter(ckpt, InferenceOptions(
            options.resolution, options.tile_size, options.tile_overlap,
            options.max_batch_size if stacked else 1, stacked,
            resolve_backend(options.backend, device, options.engine), options.engine), device)
        self.lane: Lane[Prepared, Prediction] = Lane(
            self.predict, options.max_batch_size, options.max_batch_delay_ms / 1000,
            bucket=self.segmenter.bucket, on_batch=metrics.batch_observer(name, number))
        self._padding = metrics.padding_ratio.labels(name, str(number))
        self.leases = 0  # requests holding this version (guarded by the registry's lock)

    def __repr__(self) -> str:
        return f"<ModelVersion {self.name} v{self.number} sha256 {self.ckpt.sha256[:12]}…>"

    @property
    def label(self) -> dict[str, Any]:
        """What computed a response: the body's `model` field."""
        return {"name": self.name, "version": self.number, "sha256": self.ckpt.sha256}

    def warm_up(self, threads: int) -> None:
        """Run the shapes the service will see, in a thread whose OpenMP team ends with it."""
        in_own_thread(lambda: self.segmenter.warm_up(self.options.max_batch_size), threads,
                      f"warm-up-{self.name}-{self.number}")

    # --- stages -------------------------------------------------------------------------------

    def decode(self, source: bytes | np.ndarray, probabilities: bool = False,
               confidence: bool = False) -> tuple[np.ndarray, Prepared]:
        """Upload bytes (or an RGB array already decoded) → the oriented RGB image and the
        model's input (I/O thread); `probabilities` and `confidence` ask predict for them
        too."""
        limits = self.limits
        image = (decode_image(source, limits.max_pixels, limits.max_side)
                 if isinstance(source, bytes) else
                 check_pixels(source, limits.max_pixels, limits.max_side))
        height, width = image.shape[:2]
        if probabilities and height * width > limits.max_probability_pixels:
            raise TooLarge("too_many_pixels_for_probabilities",
                           f"the image is {width}×{height} = {width * height:,} pixels; "
                           f"probabilities are returned up to {limits.max_probability_pixels:,} "
                           "pixels (DECONVSEG_MAX_PROBABILITY_PIXELS); ask for the mask only")
        prepared = self.segmenter.prepare(image)
        prepared.probabilities = probabilities
        prepared.confidence = confidence
        return image, prepared

    def predict(self, items: Sequence[Prepared], context: WorkerContext) -> list[Prediction]:
        """Same-shape items → uint8 masks at each upload's size, with probabilities when the
        items ask (the batch key keeps the two kinds apart) (inference worker)."""
        use_threads(context.threads)
        self._padding.observe(self.segmenter.padding_ratio(items))
        if items[0].probabilities:
            return [Prediction(*self.segmenter.probabilities(item)) for item in items]
        if items[0].confidence:
            return [Prediction(mask, confidence=top)
                    for mask, top in self.segmenter.predict_with_confidence(items)]
        return [Prediction(mask) for mask in self.segmenter.predict(items)]

    def document(self, seg: Segmented, out: Outputs) -> dict[str, Any]:
        """The JSON body of a JSON format, without timings (for geojson, the collection, with
        what `include` adds as foreign members)."""
        ckpt = self.ckpt
        height, width = seg.mask.shape
        extras: dict[str, Any] = {}
        if "confidence" in out.include and seg.confidence is not None:
            extras["confidence"] = {"encoding": "png",
                                    "data": encode.base64_text(encode.grey_png(seg.confidence))}
        if out.probabilities and seg.probabilities is not None:
            extras["probabilities"] = {"encoding": "npy", "dtype": "float16",
                                       "shape": list(seg.probabilities.shape),
                                       "data": encode.base64_text(encode.npy(seg.probabilities))}
        objects = (find_objects(seg.mask, ckpt.classes, seg.confidence, out.min_area,
                                out.tolerance) if out.objects else None)
        if out.format is Format.geojson:
            assert objects is not None
            return feature_collection(objects, width=width, height=height, **extras,
                                      model=self.label)
        doc: dict[str, Any] = {"width": width, "height": height, "classes": ckpt.classes}
        if out.format is Format.rle:
            doc["rle"] = encode.rle_by_class(seg.mask, ckpt.classes, out.compressed_rle)
        elif out.format is Format.json:
            doc["mask"] = {"encoding": "png",
                           "data": encode.mask_png_base64(seg.mask, ckpt.palette)}
        doc |= extras
        if objects is not None:
            doc["objects"] = objects
        doc["areas"] = encode.areas(seg.mask, ckpt.classes)
        doc["model"] = self.label
        return doc

    def encode(self, seg: Segmented, out: Outputs) -> Encoded:
        """The response body, its media type and content coding (I/O thread); records the
        encode time."""
        t0 = time.perf_counter()
        if out.format is Format.png:
            body = encode.mask_png(seg.mask, self.ckpt.palette)
        elif out.format is Format.overlay:
            assert seg.image is not None, "overlay needs the decoded image"
            body = encode.overlay_png(seg.image, seg.mask, self.ckpt.palette)
        elif out.format is Format.npy:
            body = encode.npy(seg.mask)
        else:
            doc = self.document(seg, out)
            if out.format is not Format.geojson:  # the body's own encode time: the document's
                seg.timings_ms["encode"] = round((time.perf_counter() - t0) * 1000, 3)
                doc["timings_ms"] = seg.timings_ms
            body = orjson.dumps(doc)
        media_type = MEDIA_TYPES.get(out.format, "application/json")
        coding = None
        if out.gzip and out.format in COMPRESSIBLE and len(body) >= MIN_COMPRESSED_BYTES:
            body, coding = encode.gzip(body), "gzip"
        self.timed(seg, "encode", time.perf_counter() - t0)
        return Encoded(body, media_type, coding)

    def encode_item(self, seg: Segmented, out: Outputs) -> dict[str, Any]:
        """One /segment/batch result (I/O thread)."""
        t0 = time.perf_counter()
        doc = self.document(seg, out)
        self.timed(seg, "encode", time.perf_counter() - t0)
        return doc if out.format is Format.geojson else doc | {"timings_ms": seg.timings_ms}

    def timed(self, seg: Segmented, stage: str, seconds: float) -> None:
        """Record a stage's time in the metrics and in the response's timings."""
        self.metrics.stage(self.name, self.number, stage, seconds)
        seg.timings_ms[stage] = round(seconds * 1000, 3)
