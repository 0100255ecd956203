"""The model behind the service: preprocessing policy, batched prediction and tiling.

Stages: `prepare` (I/O thread: uint8 RGB → a (3, H, W) view of its pixels, resized under the
`resize` policy) → `predict` (inference thread: a same-shape batch → normalised in the forward →
class-index masks at the upload's size).

Batch independence. Batches hold only images of one exact shape: padding to a common size would
change conv outputs near the border. Even then, CPU kernels (oneDNN) pick their blocking by batch
size, so one image's logits can differ in the last bits between a batch of 1 and a batch of 4
(measured: ≤ 3e-7). `per_item` runs one forward per image, so a result is bit-identical whatever
shares its batch; `stacked` runs one forward per batch, which pays off on a GPU.

Engine. `torchscript` scripts and freezes the network once at start-up (BatchNorm folded into
the convs, weights cast to the backend's dtype once): one call runs the whole forward in C++
without the GIL, so the event loop's Python work no longer stalls it between layers. Measured on
this 2-core CPU with one busy Python thread beside it: eager bf16 370 ms per 256² image,
TorchScript 36 ms (15.6 vs 24.7 ms with nothing beside it). `eager` keeps the nn.Module.
`onnxruntime` (fp32 only, cpu) runs the dynamic-shape ONNX export (`app.onnxruntime_engine`):
faster than fp32 TorchScript, slower than bf16 TorchScript where the CPU has native bf16
(`bench/results/engines.md`).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from app.settings import TILE_OVERLAP, TILE_SIZE
from model.checkpoint import Checkpoint, CheckpointError
from model.tiling import (
    Axis,
    class_mask,
    sliding_window_logits,
    sliding_window_maps,
    top_probability,
)
from model.transforms import Preprocess, pixels_view

log = logging.getLogger("deconvseg.inference")


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when torch sees one, else cpu; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("DECONVSEG_DEVICE=cuda, but torch sees no CUDA device; "
                                "use auto or cpu")
    return torch.device(name)


def resolve_backend(name: str, device: torch.device, engine: str = "torchscript") -> str:
    """`auto` → bf16 where the device computes it natively (1.5× served here), else fp32;
    always fp32 for the onnxruntime engine, which runs nothing else."""
    if name != "auto":
        return name
    if engine == "onnxruntime":
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def freeze_torchscript(model: torch.nn.Module, dtype: torch.dtype) -> torch.jit.ScriptModule:
    """A frozen TorchScript copy of `model` in `dtype` (the eager model is left as it is)."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.compile
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        return torch.jit.freeze(torch.jit.script(copy.deepcopy(model).to(dtype).eval()))


class Served(torch.nn.Module):
    """uint8 pixels (B, 3, h, w) → logits (B, K, h, w): the checkpoint's preprocessing
    (`model.transforms.Preprocess`), then the network in the dtype this module is cast to. One
    graph: the inference worker's threads normalise, inside the frozen forward and without the
    GIL, where an I/O thread used to make a float copy of every upload first. The logits are the
    same bits as the network's on `preprocess`'s output (tested)."""

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.preprocess = Preprocess(mean, std)
        self.net = net
        # Cast with the module (`.to(dtype)`): the dtype the network computes in.
        self.register_buffer("compute_dtype", torch.empty(0), persistent=False)

    # Not mutated: TorchScript compiles it, and cannot compile mutmut's trampoline.
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no mutate block
        return self.net(self.preprocess(pixels).to(self.compute_dtype.dtype))


@dataclass(frozen=True)
class InferenceOptions:
    resolution: str = "native"  # native | resize (long side → the checkpoint's train_size)
    tile_size: int = TILE_SIZE
    tile_overlap: int = TILE_OVERLAP
    tile_batch_size: int = 4
    stacked: bool = False  # one forward per batch (True) or per image (False)
    backend: str = "fp32"  # fp32 | bf16
    engine: str = "eager"  # eager (nn.Module; bf16 = autocast) | torchscript (frozen, no GIL)
    # | onnxruntime (fp32, cpu)


@dataclass(eq=False)
class Prepared:
    tensor: torch.Tensor  # (3, h, w) uint8 pixels at inference resolution (a view of the upload
    # when not resized); the forward normalises them
    height: int  # the upload's (EXIF-oriented) size: the mask comes back at this size
    width: int
    probabilities: bool = False  # also return the per-class probabilities
    confidence: bool = False  # also return the winning class's probability (uint8 × 255)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.tensor.shape[-2], self.tensor.shape[-1])


class Segmenter:
    def __init__(self, ckpt: Checkpoint, options: InferenceOptions, device: torch.device) -> None:
        if len(ckpt.classes) > 256:
            raise CheckpointError(f"{ckpt.path}: {len(ckpt.classes)} classes do not fit the "
                                  "8-bit masks this service returns (at most 256)")
        self.ckpt = ckpt
        self.options = options
        self.device = device
        self.model = ckpt.model.to(device).eval().to(memory_format=torch.channels_last)
        self.num_classes = len(ckpt.classes)
        self._autocast = options.backend == "bf16" and options.engine == "eager"
        self._memory_format = torch.channels_last
        served = Served(self.model, ckpt.mean, ckpt.std)
        self._net: Callable[[torch.Tensor], torch.Tensor] = served
        if options.engine == "torchscript":
            dtype = torch.bfloat16 if options.backend == "bf16" else torch.float32
            self._net = freeze_torchscript(served, dtype)  # scripts a copy
        elif options.engine == "onnxruntime":
            if options.backend != "fp32" or device.type != "cpu":
                raise ValueError(f"the onnxruntime engine runs fp32 on cpu only, not "
                                 f"{options.backend} on {device.type}: set DECONVSEG_BACKEND="
                                 f"fp32 (or auto) and DECONVSEG_DEVICE=cpu")
            from app.onnxruntime_engine import OnnxRuntimeNet

            self._memory_format = torch.contiguous_format  # ONNX Runtime reads NCHW
            self._net = Served(OnnxRuntimeNet(ckpt), ckpt.mean, ckpt.std)

    def prepare(self, image: np.ndarray) -> Prepared:
        """uint8 (H, W, 3) → Prepared: a (3, H, W) view of the pixels, in the channels-last
        layout the model runs in, resized with torchvision under the `resize` policy. No float
        copy: the forward normalises (`Served`), whole images and tiles alike."""
        height, width = image.shape[:2]
        pixels = pixels_view(image)
        if self.options.resolution == "resize":
            scale = self.ckpt.train_size / max(height, width)
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            if size != [height, width]:
                pixels = TF.resize_image(pixels, size, InterpolationMode.BILINEAR,
                                         antialias=scale < 1)
        return Prepared(pixels, height, width)

    def needs_tiling(self, item: Prepared) -> bool:
        return max(item.shape) > self.options.tile_size

    def bucket(self, item: Prepared) -> tuple:
        """Batch key: the exact input shape and outputs; a tiled image is always a batch of its
        own."""
        return ("tiled", id(item)) if self.needs_tiling(item) else (
            item.shape, item.probabilities, item.confidence)

    def padding_ratio(self, items: Sequence[Prepared]) -> float:
        """Fraction of the pixels the model computes beyond the image's own (tile overlaps)."""
        if not self.needs_tiling(items[0]):
            return 0.0
        h, w = items[0].shape
        o = self.options
        computed = (Axis.plan(h, o.tile_size, o.tile_overlap).computed
                    * Axis.plan(w, o.tile_size, o.tile_overlap).computed)
        return 1.0 - h * w / computed

    def predict(self, items: Sequence[Prepared]) -> list[np.ndarray]:
        """Same-shape items → uint8 masks (height, width), each at its upload's size."""
        with self._inference():
            return [mask for mask, _ in self._predict(items, confidence=False)]

    def predict_with_confidence(self, items: Sequence[Prepared]
                                ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`predict`, with each mask's confidence: the winning class's probability × 255 as
        uint8 (height, width)."""
        with self._inference():
            return [(mask, top) for mask, top in self._predict(items, confidence=True)
                    if top is not None]

    def forward(self, batch: torch.Tensor, float32: bool = True) -> torch.Tensor:
        """uint8 pixels (B, 3, h, w) → logits (B, K, h, w): preprocessing and the network as the
        service runs them (engine, dtype, channels_last, inference mode), as float32 or, with
        `float32=False`, in the network's dtype, as the mask takes them. The benchmark times
        this."""
        with self._inference():
            logits = self._forward(batch)
            return logits.float() if float32 else logits

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Inference mode, and bf16 autocast when the eager engine runs the bf16 backend."""
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self._autocast):
            yield

    def _predict(self, items: Sequence[Prepared], confidence: bool
                 ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        if len(items) == 1 and self.needs_tiling(items[0]):
            return [self._predict_tiled(items[0], confidence)]
        if self.options.stacked:
            logits = list(self._forward(torch.stack([it.tensor for it in items])))
        else:
            logits = [self._forward(it.tensor[None])[0] for it in items]
        return [self._maps(lg[None], it, confidence) for lg, it in zip(logits, items, strict=True)]

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) logits in the network's dtype: the mask is the same from bf16 as from
        their float32 copy (exact, order-preserving), which is only made where needed (resize,
        softmax, stitching whole logits), not per tile or per image."""
        batch = batch.to(self.device).contiguous(memory_format=self._memory_format)
        return self._net(batch)

    def _maps(self, logits: torch.Tensor, item: Prepared, confidence: bool
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(1, K, h, w) logits → (height, width) uint8 mask, resized to the upload before argmax,
        and with `confidence` the top probability × 255 as uint8."""
        logits = self._at_upload_size(logits, item)
        mask = class_mask(logits[0]).cpu().numpy()
        return mask, top_probability(logits)[0].cpu().numpy() if confidence else None

    @staticmethod
    def _at_upload_size(logits: torch.Tensor, item: Prepared) -> torch.Tensor:
        if logits.shape[-2:] != (item.height, item.width):
            logits = F.interpolate(logits.float(), size=(item.height, item.width),
                                   mode="bilinear", align_corners=False)
        return logits

    def _predict_tiled(self, item: Prepared, confidence: bool
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        if item.shape == (item.height, item.width):  # memory bounded: never holds full logits
            o = self.options
            mask, top = sliding_window_maps(self._forward, item.tensor[None].to(self.device),
                                            tile=o.tile_size, overlap=o.tile_overlap,
                                            batch_size=o.tile_batch_size, confidence=confidence)
            return mask.numpy(), None if top is None else top.numpy()
        return self._maps(self._tiled_logits(item), item, confidence)

    def _tiled_logits(self, item: Prepared) -> torch.Tensor:
        o = self.options
        return sliding_window_logits(self._forward, item.tensor[None].to(self.device),
                                     self.num_classes, tile=o.tile_size,
                                     overlap=o.tile_overlap, batch_size=o.tile_batch_size)

    def probabilities(self, item: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mask (as `predict` gives it), the (K, height, width) float16 softmax probabilities
        at the upload's size and the confidence (as `predict_with_confidence` gives it). Holds
        the whole image's logits: callers bound the pixels (DECONVSEG_MAX_PROBABILITY_PIXELS)."""
        with self._inference():
            logits = (self._tiled_logits(item) if self.needs_tiling(item)
                      else self._forward(item.tensor[None]))
            logits = self._at_upload_size(logits, item).float()
            mask = class_mask(logits[0]).cpu().numpy()
            return (mask, logits[0].softmax(0).half().cpu().numpy(),
                    top_probability(logits)[0].cpu().numpy())

    def warm_up(self, max_batch_size: int) -> None:
        """Run the shapes the service will see, so the first request is not the slow one."""
        side = min(self.ckpt.train_size, self.options.tile_size)
        pixels = torch.zeros(side, side, 3, dtype=torch.uint8).permute(2, 0, 1)  # channels-last
        probe = Prepared(pixels, side, side)
        for _ in range(3):  # TorchScript's profiling executor optimises on the second call
            self.predict([probe])
        if self.options.stacked and max_batch_size > 1:
            self.predict([probe] * max_batch_size)
