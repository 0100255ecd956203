"""ONNX export, any batch and size: `python -m model.export CHECKPOINT --format onnx --out DIR`.

Writes `DIR/model.onnx` and a Triton model-repository folder beside it:
`DIR/<name>/config.pbtxt`, `DIR/<name>/labels.txt`, `DIR/<name>/1/model.onnx`
(`<name>` = the checkpoint's stem unless `--name` says otherwise).

The graph. Input `image`: float32 (N, 3, H, W), the normalised RGB image,
(pixel / 255 - mean) / std with the checkpoint's mean and std. Outputs `logits`: float32
(N, K, H, W), and `mask`: uint8 (N, H, W), the argmax over K (the first class on ties, as in
torch). N, H and W are dynamic, down to 1. The metadata (`metadata_props`) carries the class
names, palette, mean, std and train_size as JSON, and the checkpoint's sha256.

Why the export runs a re-cut copy. `UpBlock` calls its ConvTranspose2d with
`output_size=skip.shape[-2:]`, which PyTorch turns into an `output_padding` of 0 or 1 (the
parity of the skip's side). ONNX's ConvTranspose takes `output_padding` as a static attribute:
the TorchScript exporter bakes the traced size's parities into every layer, and the dynamo
exporter, which keeps the value symbolic, cannot write it at all ("Unsupported attribute
type"). Output padding only appends a row and a column at the bottom right; the rows before
them are the same sums. So the exported copy runs every transposed conv with output_padding=1
(2m rows) and narrows the result to the skip's size, shape arithmetic ONNX does in-graph.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from model.net import FullResolutionUp, UpBlock

OPSET = 18
INPUT = "image"
OUTPUTS = ("logits", "mask")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ExportError(ValueError):
    """The export cannot be written; the message names the file and the reason."""


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d(output_size=…) as in-graph shape arithmetic: output_padding=1, then
    narrowed to `output_size`, so an exported graph serves every size."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None:
            return super().forward(x)
        padding = cast(tuple[int, ...], self.padding)  # (1, 1): the up blocks set it numerically
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, padding,
                               output_padding=1, groups=self.groups, dilation=self.dilation)
        height, width = output_size[-2:]
        return y.narrow(-2, 0, height).narrow(-1, 0, width)  # (B, C, height, width)


class LogitsAndMask(nn.Module):
    """The network with its argmax beside it: image → (logits, uint8 mask)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(image)  # (N, K, H, W)
        return logits, logits.argmax(1).to(torch.uint8)  # (N, H, W)


def shape_generic(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` whose transposed convs export for any input size."""
    # Contiguous weights: channels_last ones (as the service keeps them) make torch.export
    # derive impossible size bounds ("derived min value of 16*height - 11").
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    for block in model.modules():
        if isinstance(block, UpBlock | FullResolutionUp):
            block.up.__class__ = CroppedConvTranspose2d
    return model


def metadata(ckpt: Checkpoint) -> dict[str, str]:
    """What a consumer of the file needs besides the graph: class names, colours and the
    normalisation the input expects."""
    return {
        "format": "deconvseg-onnx",
        "classes": json.dumps(ckpt.classes),
        "palette": json.dumps(ckpt.palette),
        "mean": json.dumps(ckpt.mean),
        "std": json.dumps(ckpt.std),
        "train_size": str(ckpt.train_size),
        "checkpoint_sha256": ckpt.sha256,
        "input": f"{INPUT}: float32 (N, 3, H, W) = (RGB / 255 - mean) / std",
    }


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """No warnings, and no INFO line per optimiser pass (some 50 of them) from onnxscript."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(ckpt: Checkpoint, masks: bool = True) -> onnx.ModelProto:
    """The checkpoint's network as an ONNX model with dynamic N, H and W (see the module
    docstring); `masks=False` leaves the `mask` output out."""
    if masks and len(ckpt.classes) > 256:
        raise ExportError(f"{ckpt.path}: {len(ckpt.classes)} classes do not fit the uint8 mask "
                          "output (at most 256)")
    net = shape_generic(ckpt.model)
    module = LogitsAndMask(net) if masks else net
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=1)
    width = torch.export.Dim("width", min=1)
    sample = torch.zeros(2, ckpt.config.in_channels, 37, 50)  # sizes > 1: no 0/1 specialisation
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module, (sample,), dynamo=True, opset_version=OPSET, verbose=False,
            input_names=[INPUT], output_names=list(OUTPUTS if masks else OUTPUTS[:1]),
            dynamic_shapes=({0: batch, 2: height, 3: width},))
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    proto.doc_string = f"deconvseg {ckpt.name}: " + metadata(ckpt)["input"]
    onnx.helper.set_model_props(proto, metadata(ckpt))
    onnx.checker.check_model(proto)
    return proto


def triton_config(ckpt: Checkpoint, name: str, max_batch_size: int) -> str:
    """config.pbtxt for Triton's onnxruntime backend; dims leave the batch out, -1 = any."""
    num_classes = len(ckpt.classes)
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f'  {{ name: "{INPUT}", data_type: TYPE_FP32, dims: [ 3, -1, -1 ] }}',
        "]",
        "output [",
        f'  {{ name: "logits", data_type: TYPE_FP32, dims: [ {num_classes}, -1, -1 ] }},',
        '  { name: "mask", data_type: TYPE_UINT8, dims: [ -1, -1 ], '
        'label_filename: "labels.txt" }',
        "]",
        "dynamic_batching { }",
        f'parameters {{ key: "mean", value: {{ string_value: "{json.dumps(ckpt.mean)}" }} }}',
        f'parameters {{ key: "std", value: {{ string_value: "{json.dumps(ckpt.std)}" }} }}',
        "",
    ])


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_export(ckpt: Checkpoint, out: Path, name: str, max_batch_size: int) -> list[Path]:
    """Write DIR/model.onnx and the Triton folder DIR/<name>; return the files written."""
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"{name!r}: not a usable model name (letters, digits, '.', '_', '-')")
    version = out / name / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{exc.filename or out}: cannot create the output folder "
                          f"({exc.strerror or type(exc).__name__})") from None
    data = export_onnx(ckpt).SerializeToString()
    files = {
        out / "model.onnx": data,
        version / "model.onnx": data,
        out / name / "config.pbtxt": triton_config(ckpt, name, max_batch_size).encode(),
        out / name / "labels.txt": "".join(f"{c}\n" for c in ckpt.classes).encode(),
    }
    for path, content in files.items():
        try:
            _write(path, content)
        except OSError as exc:
            raise ExportError(f"{path}: cannot write ({exc.strerror or type(exc).__name__})"
                              ) from None
    return list(files)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="path to a .pt checkpoint")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--name", help="Triton model name (default: the checkpoint's stem)")
    parser.add_argument("--max-batch-size", type=int, default=8,
                        help="Triton's max_batch_size for the model")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.max_batch_size < 1:
        print(f"error: --max-batch-size {args.max_batch_size}: must be ≥ 1", file=sys.stderr)
        return 2
    try:
        ckpt = load_checkpoint(args.checkpoint)
        files = write_export(ckpt, args.out, args.name or ckpt.name, args.max_batch_size)
    except (CheckpointError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
