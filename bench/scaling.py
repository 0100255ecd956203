"""Latency and peak RSS vs image size: `python -m bench.scaling --sizes 256 1024 4096 8192`.

Each size runs in a fresh process (so its peak RSS is its own) through the service's own stages:
JPEG decode → preprocess → predict (tiled above the tile size) → PNG encode.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app import encode
from app.allocator import tune_malloc
from app.decode import decode_image
from app.inference import InferenceOptions, Segmenter, resolve_backend
from app.settings import TILE_OVERLAP, TILE_SIZE
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes


def scene_jpeg(side: int, path: Path) -> None:
    """A side×side JPEG tiled from 512² synthetic scenes (objects stay at training scale)."""
    tile_side = min(side, 512)
    tile, _ = SyntheticScenes(1, size=tile_side, seed=11).render(0)
    reps = -(-side // tile_side)
    image = np.tile(tile, (reps, reps, 1))[:side, :side]
    Image.fromarray(image).save(path, format="JPEG", quality=90)


def status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM, ...), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss, it does not inherit the parent's
    peak across fork + exec."""
    peak = status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(checkpoint: str, path: Path, tile: int, overlap: int, tile_batch: int) -> dict:
    tune_malloc()  # as `python -m app` does
    data = path.read_bytes()
    device = torch.device("cpu")
    segmenter = Segmenter(load_checkpoint(checkpoint),
                          InferenceOptions(tile_size=tile, tile_overlap=overlap,
                                           tile_batch_size=tile_batch,
                                           backend=resolve_backend("auto", device),
                                           engine="torchscript"), device)
    segmenter.warm_up(1)
    ready_mb = status_mb("VmRSS")  # imports, model and warm-up: before the image
    t0 = time.perf_counter()
    image = decode_image(data, 1 << 40)
    decoded_mb = status_mb("VmHWM")
    prepared = segmenter.prepare(image)
    del image
    mask = segmenter.predict([prepared])[0]
    del prepared
    png = encode.mask_png(mask, segmenter.ckpt.palette)
    seconds = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    return {"side": mask.shape[0], "megapixels": round(mask.size / 1e6, 3),
            "seconds": round(seconds, 3), "peak_rss_mb": round(rss_mb, 1),
            "ready_rss_mb": ready_mb, "decode_peak_mb": decoded_mb,
            "tiled": mask.shape[0] > tile, "png_bytes": len(png)}


def run(checkpoint: str, sizes: list[int], tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP,
        tile_batch: int = 1) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for side in sizes:
            path = Path(tmp) / f"{side}.jpg"
            scene_jpeg(side, path)
            out = subprocess.run(
                [sys.executable, "-m", "bench.scaling", "--one", str(path), "--checkpoint",
                 checkpoint, "--tile", str(tile), "--overlap", str(overlap),
                 "--tile-batch", str(tile_batch)],
                capture_output=True, text=True, check=True, timeout=600)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{side:>5}²: {rows[-1]['seconds']:8.2f} s  peak RSS "
                  f"{rows[-1]['peak_rss_mb']:7.1f} MB (ready {rows[-1]['ready_rss_mb']:.0f}, "
                  f"after decode {rows[-1]['decode_peak_mb']:.0f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--tile", type=int, default=TILE_SIZE, help="the service's by default")
    parser.add_argument("--overlap", type=int, default=TILE_OVERLAP)
    parser.add_argument("--tile-batch", type=int, default=1, help="tiles per forward (the "
                        "service uses 1 on CPU)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.checkpoint, args.one, args.tile, args.overlap,
                                     args.tile_batch)))
        return
    print(json.dumps(run(args.checkpoint, args.sizes, args.tile, args.overlap, args.tile_batch)))


if __name__ == "__main__":
    main()
