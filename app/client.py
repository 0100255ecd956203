"""Command-line client: `python -m app.client IMAGE... [--url URL] [--format FORMAT]
[--include confidence,probabilities,objects] [--min-area PX] [--tolerance PX]
[--model NAME [--version N]]`.

Posts the images to `POST /segment` (or the named model's route) concurrently and writes one
output per image into --out, named by SUFFIXES: `<stem>.mask.png` (png), `<stem>.overlay.png`
(overlay), `<stem>.json` (json, objects), `<stem>.geojson` (geojson) or `<stem>.npy` (npy).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import mimetypes
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from app.formats import ALLOWED_TEXT, INCLUDES
from app.formats import INCLUDE_FORMATS as SERVER_INCLUDE_FORMATS

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 3  # 2: usage errors, exited by argparse
SUFFIXES = {"png": ".mask.png", "overlay": ".overlay.png", "json": ".json", "objects": ".json",
            "geojson": ".geojson", "npy": ".npy"}
# --include works with the JSON formats the CLI writes (rle is not one of them)
INCLUDE_FORMATS = tuple(f for f in SERVER_INCLUDE_FORMATS if f in SUFFIXES)
EPILOG = """exit status:
  0  every image was segmented and its output written
  1  at least one image failed: the server refused it (the API's message is printed)
     or its output could not be written; the other outputs are still written
  2  usage error: bad arguments, a missing or unreadable image, or two images with one output name
  3  the server could not be reached or did not answer in time"""


@dataclass
class Outcome:
    image: Path
    output: Path | None = None
    error: str | None = None
    unreachable: bool = False


class Unreachable(Exception):
    """The server did not answer: connection refused, unknown host, or a timeout."""


def include_list(text: str) -> str:
    """`--include`'s comma list, checked and normalised (`confidence,objects`)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in INCLUDES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose from {', '.join(INCLUDES)} (comma-separated)")
    return ",".join(dict.fromkeys(names))


def min_area(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of pixels, at least 1")
    return value


def tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a distance in pixels, 0 or more")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deconvseg", description="Segment images with a running deconvseg server.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                        help=f"image files: {ALLOWED_TEXT}")
    parser.add_argument("--url", default=os.environ.get("DECONVSEG_URL", "http://127.0.0.1:8000"),
                        help="server base URL (default: $DECONVSEG_URL or %(default)s)")
    parser.add_argument("--format", choices=list(SUFFIXES), default="png",
                        help="png: the mask (palette PNG); overlay: the image with the mask "
                             "blended in; json: classes, areas, timings, base64 mask; objects: "
                             "json's fields and each object's polygon, without the mask; geojson: "
                             "the objects as a FeatureCollection in pixel coordinates; npy: the "
                             "(H, W) uint8 class mask as a NumPy file")
    parser.add_argument("--include", type=include_list, metavar="FIELDS",
                        help=f"with --format {' or '.join(INCLUDE_FORMATS)}: extra fields, "
                             f"comma-separated from {', '.join(INCLUDES)}")
    parser.add_argument("--min-area", type=min_area, metavar="PX",
                        help="objects smaller than this many pixels are left out "
                             "(default: the server's)")
    parser.add_argument("--tolerance", type=tolerance, metavar="PX",
                        help="polygon simplification: how far, in pixels, an outline may move "
                             "(default: the server's)")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="output folder, created if missing (default: current folder)")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="requests in flight (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="per request (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("DECONVSEG_API_KEY"), metavar="KEY",
                        help="sent as X-API-Key (default: $DECONVSEG_API_KEY)")
    parser.add_argument("--model", metavar="NAME",
                        help="the model to use (GET /models lists them); default: the server's")
    parser.add_argument("--version", type=int, metavar="N",
                        help="one version of --model; default: its serving version")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def option_params(args: argparse.Namespace) -> dict[str, str]:
    """The options given, as the upload route's query parameters; the rest keep the server's
    defaults."""
    given = {"include": args.include, "min_area": args.min_area, "tolerance": args.tolerance}
    return {name: str(value) for name, value in given.items() if value is not None}


def output_path(image: Path, fmt: str, out: Path) -> Path:
    return out / (image.stem + SUFFIXES[fmt])


def check_inputs(images: Sequence[Path], fmt: str, out: Path) -> str | None:
    """The usage problem with these inputs, or None."""
    seen: dict[Path, Path] = {}
    for image in images:
        if not image.is_file():
            return f"{image}: no such file"
        if not os.access(image, os.R_OK):
            return f"{image}: not readable"
        target = output_path(image, fmt, out)
        if target in seen:
            return f"{seen[target]} and {image} would both be written to {target}"
        seen[target] = image
    if out.exists() and not out.is_dir():
        return f"--out {out}: not a folder"
    return None


def api_error(response: httpx.Response) -> str:
    """`HTTP 400 invalid_image: <message>` from the API's error body (or the status line)."""
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def describe_transport_error(exc: httpx.TransportError, client: httpx.AsyncClient) -> str:
    url = str(client.base_url).rstrip("/")
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer from {url} within {client.timeout.read:g} s (see --timeout)"
    return f"cannot reach the server at {url}: {exc or type(exc).__name__}"


def segment_path(model: str | None = None, version: int | None = None) -> str:
    """The upload route for a model (the server's default when None) and version."""
    if model is None:
        return "/segment"
    return f"/models/{model}" + (f"/versions/{version}" if version else "") + "/segment"


async def segment_one(client: httpx.AsyncClient, image: Path, fmt: str, out: Path,
                      limit: asyncio.Semaphore, path: str = "/segment",
                      params: dict[str, str] | None = None) -> Outcome:
    async with limit:
        try:
            data = await asyncio.to_thread(image.read_bytes)
        except OSError as exc:
            return Outcome(image, error=f"cannot read it: {exc.strerror}")
        media = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
        try:
            response = await client.post(path, params={"format": fmt, **(params or {})},
                                         files={"file": (image.name, data, media)})
        except httpx.TransportError as exc:
            return Outcome(image, error=describe_transport_error(exc, client), unreachable=True)
    if response.status_code != 200:
        return Outcome(image, error=api_error(response))
    target = output_path(image, fmt, out)
    try:
        await asyncio.to_thread(target.write_bytes, response.content)
    except OSError as exc:
        return Outcome(image, error=f"cannot write {target}: {exc.strerror}")
    return Outcome(image, output=target)


async def segment_all(images: Sequence[Path], fmt: str, out: Path, url: str, *,
                      concurrency: int = 4, timeout: float = 60.0, api_key: str | None = None,
                      quiet: bool = False, path: str = "/segment",
                      params: dict[str, str] | None = None,
                      transport: httpx.AsyncBaseTransport | None = None) -> list[Outcome]:
    """Outcomes in input order, at most `concurrency` requests in flight; `params` are added
    to each upload's query string (`include`, `min_area`, `tolerance`).

    Raises Unreachable when the server does not answer `GET /healthz` before any upload.
    """
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits,
                                 transport=transport) as client:
        try:  # /healthz is open without a key: a quick, clear check before any upload
            await client.get("/healthz")
        except httpx.TransportError as exc:
            raise Unreachable(describe_transport_error(exc, client)) from None
        limit = asyncio.Semaphore(concurrency)
        tasks = [asyncio.create_task(segment_one(client, image, fmt, out, limit, path, params))
                 for image in images]
        with tqdm(total=len(tasks), unit="image", file=sys.stderr, disable=quiet,
                  dynamic_ncols=True) as bar:
            for finished in asyncio.as_completed(tasks):
                outcome = await finished
                if outcome.error:
                    bar.write(f"deconvseg: {outcome.image}: {outcome.error}", file=sys.stderr)
                bar.update()
    return [task.result() for task in tasks]


def exit_status(outcomes: Sequence[Outcome]) -> int:
    if any(o.unreachable for o in outcomes):
        return EXIT_UNREACHABLE
    return EXIT_FAILED if any(o.error for o in outcomes) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.version is not None and (args.model is None or args.version < 1):
        parser.error("--version needs --model and a version ≥ 1")
    if args.include and args.format not in INCLUDE_FORMATS:
        parser.error(f"--include works with --format {' or '.join(INCLUDE_FORMATS)}, "
                     f"not {args.format}")
    problem = check_inputs(args.images, args.format, args.out)
    if problem:
        parser.error(problem)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: {exc.strerror}")
    try:
        outcomes = asyncio.run(segment_all(
            args.images, args.format, args.out, args.url.rstrip("/"),
            concurrency=args.concurrency, timeout=args.timeout, api_key=args.api_key,
            quiet=args.quiet, path=segment_path(args.model, args.version),
            params=option_params(args)))
    except Unreachable as exc:
        print(f"deconvseg: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    for outcome in outcomes:
        if outcome.output is not None:
            print(outcome.output)
    written = sum(o.output is not None for o in outcomes)
    if written < len(outcomes):
        print(f"deconvseg: {written} of {len(outcomes)} images segmented", file=sys.stderr)
    return exit_status(outcomes)


if __name__ == "__main__":
    sys.exit(main())
