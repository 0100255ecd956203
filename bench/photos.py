"""Cost per pixel at the sizes users send: `python -m bench.photos [--out bench/results]`.

For each size, the inference time of one image (best of three, after one warm-up of that
shape), in process (`Segmenter.predict`, as the service runs it: frozen engine, default backend,
tiled at the default tile size) and served (`inference` from `Server-Timing`, one upload at a
time to a real server with the shipped defaults), divided by its pixels and by the same figure
at 256². Writes photos.json and photos.png (cost per pixel against size).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import time
from pathlib import Path

import httpx
import matplotlib
import numpy as np
import torch
from PIL import Image

from app.allocator import tune_malloc
from app.inference import InferenceOptions, Segmenter, resolve_backend
from app.settings import Settings
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes
from tests.support.server import start_server, stop

SIZES = [(256, 256), (640, 480), (1024, 768), (1920, 1080), (4032, 3024), (8192, 8192)]


def photo(width: int, height: int) -> np.ndarray:
    """A scene of this size tiled from 512² synthetic scenes (objects at training scale)."""
    tile, _ = SyntheticScenes(1, size=min(512, width, height), seed=11).render(0)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.tile(tile, reps)[:height, :width]


def best_of(fn, rounds: int = 3) -> float:
    fn()  # warm-up of this shape
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def in_process(checkpoint: str, sizes: list[tuple[int, int]]) -> list[float]:
    """Seconds per image, as the service computes it (2 threads, worker 0 alone)."""
    tune_malloc()
    torch.set_num_threads(Settings().resolved_threads)
    device = torch.device("cpu")
    s = Settings()
    seg = Segmenter(load_checkpoint(checkpoint), InferenceOptions(
        tile_size=s.tile_size, tile_overlap=s.tile_overlap, tile_batch_size=1,
        backend=resolve_backend(s.backend, device), engine=s.engine), device)
    seg.warm_up(1)
    def infer(image: np.ndarray) -> None:
        seg.predict([seg.prepare(image)])

    return [best_of(functools.partial(infer, photo(w, h))) for w, h in sizes]


def served(checkpoint: str, sizes: list[tuple[int, int]], log: Path) -> list[float]:
    """Seconds of `inference` (Server-Timing) per image on a real server (the upload limits
    raised so that 8192² = 67 MP passes; everything else at its default)."""
    proc, base = start_server({"DECONVSEG_CHECKPOINT": checkpoint,
                               "DECONVSEG_MAX_PIXELS": str(70_000_000),
                               "DECONVSEG_MAX_UPLOAD_BYTES": str(200_000_000)}, log=log)
    out = []
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            for w, h in sizes:
                buffer = io.BytesIO()
                Image.fromarray(photo(w, h)).save(buffer, format="JPEG", quality=90)
                data = buffer.getvalue()
                timings = []
                for _ in range(4):  # the first is the shape's warm-up
                    r = client.post("/segment?format=png", files={"file": ("p.jpg", data)})
                    r.raise_for_status()
                    stages = dict(part.strip().split(";dur=")
                                  for part in r.headers["server-timing"].split(","))
                    timings.append(float(stages["inference"]) / 1000)
                out.append(min(timings[1:]))
    finally:
        stop(proc)
    return out


def run(checkpoint: str, sizes: list[tuple[int, int]], out: Path) -> list[dict]:
    inproc = in_process(checkpoint, sizes)
    serve = served(checkpoint, sizes, out / "photos-server.log")
    rows = []
    for (w, h), a, b in zip(sizes, inproc, serve, strict=True):
        rows.append({"size": f"{w}×{h}", "megapixels": round(w * h / 1e6, 3),
                     "in_process_ms": round(a * 1000, 1), "served_ms": round(b * 1000, 1)})
    for key in ("in_process", "served"):
        base = rows[0][f"{key}_ms"] / (sizes[0][0] * sizes[0][1])
        for row, (w, h) in zip(rows, sizes, strict=True):
            row[f"{key}_per_pixel_vs_256"] = round(row[f"{key}_ms"] / (w * h) / base, 2)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    mp = [r["megapixels"] for r in rows]
    for key, label in (("in_process", "in process"), ("served", "served (Server-Timing)")):
        ax.plot(mp, [r[f"{key}_per_pixel_vs_256"] for r in rows], marker="o", label=label)
    ax.axhline(1.3, color="grey", linestyle="--", linewidth=1, label="target ≤ 1.3")
    ax.set_xscale("log")
    ax.set_xlabel("megapixels (256² … 8192²)")
    ax.set_ylabel("inference time per pixel ÷ 256²")
    ax.set_ylim(0, max(2.0, max(r["served_per_pixel_vs_256"] for r in rows) + 0.2))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="weights/model.pt")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.checkpoint, SIZES, args.out)
    (args.out / "photos.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.out / "photos.png")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
