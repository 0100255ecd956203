"""Each response format on a 12 MP photo: `python -m bench.outputs [CHECKPOINT] [--size W H]`.

In process, with the served code: the shipped model (served defaults) segments a 4032×3024
photo once (with confidence, which the objects' scores need); then each format is encoded by
`ModelVersion.encode`, one I/O thread's worth (torch and OpenCV single-threaded), best of three.
Per format: encode ms (and with gzip, as a client sending `Accept-Encoding: gzip` gets it), its
share of the inference time, body bytes, gzip-1 bytes and bytes against the PNG mask's. Also
`json.dumps` against `orjson.dumps` on the largest body. Results: bench/results/outputs.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import orjson
import torch

from app.metrics import Metrics
from app.model_config import ModelConfig, ServingOptions
from app.pipeline import COMPRESSIBLE, Format, Limits, ModelVersion, Outputs, Segmented
from app.settings import Settings
from bench.photos import photo
from bench.report import outputs_table
from model.checkpoint import load_checkpoint

FORMATS: list[tuple[str, Outputs]] = [
    ("png", Outputs(Format.png)),
    ("npy", Outputs(Format.npy)),
    ("rle (compressed)", Outputs(Format.rle)),
    ("rle (uncompressed)", Outputs(Format.rle, compressed_rle=False)),
    ("json", Outputs(Format.json)),
    ("json + confidence", Outputs(Format.json, frozenset({"confidence"}))),
    ("json + objects", Outputs(Format.json, frozenset({"objects"}))),
    ("objects", Outputs(Format.objects)),
    ("geojson", Outputs(Format.geojson)),
    ("overlay", Outputs(Format.overlay)),
]


def best_ms(fn, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def run(checkpoint: str, width: int, height: int) -> dict:
    settings = Settings(checkpoint=checkpoint)
    options = ServingOptions.resolve(ModelConfig(), settings)
    version = ModelVersion("model", 1, load_checkpoint(checkpoint), options, torch.device("cpu"),
                           Limits(settings.max_pixels, settings.max_side,
                                  settings.max_probability_pixels), Metrics())
    version.warm_up(settings.resolved_threads)
    image = photo(width, height)
    torch.set_num_threads(settings.resolved_threads)  # as worker 0 computing alone
    _, prepared = version.decode(image, confidence=True)
    t0 = time.perf_counter()
    (prediction,) = version.segmenter.predict_with_confidence([prepared])
    inference_ms = (time.perf_counter() - t0) * 1000
    torch.set_num_threads(1)  # encoding runs in an I/O thread
    cv2.setNumThreads(1)
    mask, confidence = prediction
    seg = Segmented(image, mask, {}, None, confidence)
    gc.collect()
    gc.freeze()  # as the server does once warm (app/main.py)
    png_bytes = len(version.encode(seg, Outputs(Format.png)).body)
    rows = []
    for name, out in FORMATS:
        body = version.encode(seg, out).body
        gc.collect()
        ms = best_ms(lambda out=out: version.encode(seg, out))
        gz = len(zlib.compress(body, 1))
        packed = dataclasses.replace(out, gzip=True)
        gzip_ms = (round(best_ms(lambda packed=packed: version.encode(seg, packed)), 1)
                   if out.format in COMPRESSIBLE else None)
        rows.append({"format": name, "encode_ms": round(ms, 1), "gzip_encode_ms": gzip_ms,
                     "share_of_inference": round(ms / inference_ms, 3), "bytes": len(body),
                     "gzip_bytes": gz, "bytes_vs_png": round(len(body) / png_bytes, 2),
                     "gzip_vs_png": round(gz / png_bytes, 2)})
        print(f"{name:20s} {ms:8.1f} ms ({ms / inference_ms:6.1%} of inference)  "
              f"{len(body):>11,} B  gzip {gz:>10,} B  ×PNG {len(body) / png_bytes:5.2f} / "
              f"{gz / png_bytes:5.2f}", flush=True)
    doc = version.document(seg, Outputs(Format.json, frozenset({"objects", "confidence"})))
    dumps = {"json.dumps": round(best_ms(lambda: json.dumps(doc).encode()), 1),
             "orjson.dumps": round(best_ms(lambda: orjson.dumps(doc)), 1)}
    print(f"largest body (json + objects + confidence): {dumps}")
    objects = len(doc["objects"])
    return {"size": [width, height], "inference_ms": round(inference_ms, 1),
            "objects": objects, "rows": rows, "serialise_ms": dumps,
            "classes_present": int(np.count_nonzero(np.bincount(mask.ravel())))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="weights/model.pt")
    parser.add_argument("--size", type=int, nargs=2, default=[4032, 3024], metavar=("W", "H"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/outputs.json"))
    args = parser.parse_args()
    result = run(args.checkpoint, *args.size)
    print(f"inference {result['inference_ms']} ms, {result['objects']} objects")
    print(outputs_table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
