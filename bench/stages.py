"""Where one 256² request's time goes, stage by stage: `python -m bench.stages [CHECKPOINT]`.

Each stage of the served path is timed alone on the service's own functions (median of many
runs): decode (Pillow's header, torchvision's libjpeg-turbo), prepare (a view of the pixels),
forward (the served engine: normalisation and the network), mask (argmax → uint8), and the two
response encodings (palette PNG; the JSON document with base64 PNG and areas). The forward and
the mask run on the inference workers' threads, the rest on one, as in an I/O thread. The HTTP
layer (uvicorn, multipart parsing, routing) is what the served figures add on top: `bench.load`
reports the server's CPU per request to compare with the sum here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch

from app import encode
from app.allocator import tune_malloc
from app.decode import decode_image
from app.inference import InferenceOptions, Segmenter, resolve_backend
from bench.timing import timed
from model.checkpoint import load_checkpoint
from model.tiling import class_mask
from tests.support.server import scene_jpeg


def run(checkpoint: str, size: int = 256, runs: int = 100) -> list[dict]:
    ckpt = load_checkpoint(checkpoint)
    cpu = torch.device("cpu")
    seg = Segmenter(ckpt, InferenceOptions(backend=resolve_backend("auto", cpu),
                                           engine="torchscript"), cpu)
    jpeg = scene_jpeg(size, 3)
    image = decode_image(jpeg, 40_000_000)
    item = seg.prepare(image)
    logits = seg.forward(item.tensor[None], float32=False)  # as the mask takes them
    mask = seg.predict([item])[0]
    doc = {"width": size, "height": size, "classes": ckpt.classes}
    forward_threads = torch.get_num_threads()
    stages: list[tuple[str, Callable[[], object]]] = [
        ("decode (JPEG → RGB uint8)", lambda: decode_image(jpeg, 40_000_000)),
        ("prepare (a view of the pixels)", lambda: seg.prepare(image)),
        (f"forward (normalise + network, {seg.options.backend} {seg.options.engine}, "
         f"{torch.get_num_threads()} threads)", lambda: seg.forward(item.tensor[None])),
        ("mask (argmax → uint8)", lambda: class_mask(logits[0]).numpy()),
        ("encode png", lambda: encode.mask_png(mask, ckpt.palette)),
        ("encode json (base64 png + areas)", lambda: json.dumps(
            {**doc, "mask": {"encoding": "png",
                             "data": encode.mask_png_base64(mask, ckpt.palette)},
             "areas": encode.areas(mask, ckpt.classes)}).encode()),
    ]
    rows = []
    # The forward and the mask run in an inference worker, with its threads; the rest in an I/O
    # thread, on one.
    for name, fn in stages:
        torch.set_num_threads(forward_threads if name.startswith(("forward", "mask")) else 1)
        rows.append({"stage": name,
                     "ms": round(statistics.median(timed(fn, runs=runs)) * 1000, 3)})
    torch.set_num_threads(forward_threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    tune_malloc()  # as `python -m app` does
    rows = run(args.checkpoint, runs=args.runs)
    for row in rows:
        print(f"{row['ms']:8.3f} ms  {row['stage']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
