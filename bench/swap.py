"""Zero-downtime swap under load: clients post without pause while version 2 is dropped into
the model repository, loaded and made serving, and version 1 drains and unloads.

    python -m bench.swap [--checkpoint weights/model.pt] [--clients 16] [--seconds 30]

Reports every non-200 response, which version answered, whether any request sent after the
load call returned was answered by version 1, p99 latency before and during the swap, and the
server's RSS with one version, at its peak and after version 1 was freed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.support.server import start_server, stop
from tests.support.swap import ADMIN_KEY, swap_under_load


def run(checkpoint: Path, clients: int, seconds: float, swap_at: float,
        env: dict[str, str] | None = None) -> dict[str, Any]:
    """A server of its own on a fresh repository holding `checkpoint` as version 1."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "seg" / "1").mkdir(parents=True)
        shutil.copy(checkpoint, repo / "seg" / "1" / "model.pt")
        proc, base = start_server({"DECONVSEG_MODEL_REPOSITORY": str(repo),
                                   "DECONVSEG_ADMIN_KEY": ADMIN_KEY, **(env or {})},
                                  log=Path(tmp) / "server.log")
        try:
            result = asyncio.run(swap_under_load(base, proc.pid, repo, "seg", checkpoint,
                                                 clients, seconds, swap_at))
        finally:
            stop(proc)
    one, after = result["rss_mb"]["one_version"], result["rss_mb"]["after_unload"]
    result["rss_mb"]["after_over_one_version"] = round(after / one, 3) if one else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("weights/model.pt"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--swap-at", type=float, default=10)
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    result = run(args.checkpoint, args.clients, args.seconds, args.swap_at)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
