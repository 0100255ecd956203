"""Markdown tables, target ratios and PNG plots from one `python -m bench` result."""

from __future__ import annotations

from pathlib import Path


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _at(rows: list[dict], concurrency: int) -> dict | None:
    return next((r for r in rows if r["concurrency"] == concurrency), None)


def _backend_engine(name: str) -> tuple[str, str]:
    """'bf16 torchscript, 2 workers, batching on' → ('bf16', 'torchscript'); engine defaults to
    eager for names without one."""
    words = name.split(",")[0].split()
    return words[0], words[1] if len(words) > 1 else "eager"


def targets(result: dict) -> list[list]:
    lim, served, naive = result["limit"], result["served"], result["naive"]
    out = []
    best_name, best16 = max(((k, _at(v, 16)) for k, v in served.items() if _at(v, 16)),
                            key=lambda kv: kv[1]["requests_per_s"])
    ratio = best16["requests_per_s"] / lim["flop_bound_fp32_img_s"]
    out.append(["served img/s at c=16 ≥ 0.8 × fp32 FLOP-bound",
                f"{best16['requests_per_s']} / {lim['flop_bound_fp32_img_s']} ({best_name})",
                f"{ratio:.2f}", "yes" if ratio >= 0.8 else "no"])
    backend, engine = _backend_engine(best_name)
    same = [r for r in result["inprocess"] if r["backend"] == backend and r["size"] == 256
            and r.get("engine", "eager") == engine]
    best_inproc = max(r["images_per_s"] for r in same)
    ratio = best16["requests_per_s"] / best_inproc
    out.append([f"served ≥ 0.9 × best in-process ({backend} {engine}, 256²)",
                f"{best16['requests_per_s']} / {best_inproc}", f"{ratio:.2f}",
                "yes" if ratio >= 0.9 else "no"])
    s32, n32 = _at(served[best_name], 32), _at(naive, 32)
    if s32 and n32:
        ratio = s32["requests_per_s"] / max(n32["requests_per_s"], 1e-9)
        out.append(["served ≥ 3 × naive at c=32", f"{s32['requests_per_s']} / "
                    f"{n32['requests_per_s']}", f"{ratio:.2f}", "yes" if ratio >= 3 else "no"])
    s1 = _at(served[best_name], 1)
    single = next(r for r in same if r["batch"] == 1 and r.get("workers", 1) == 1)
    if s1:
        ratio = s1["p50_ms"] / single["latency_ms"]
        out.append(["p50 at c=1 ≤ 1.2 × in-process batch-1 latency",
                    f"{s1['p50_ms']} ms / {single['latency_ms']} ms", f"{ratio:.2f}",
                    "yes" if ratio <= 1.2 else "no"])
    scale = {r["side"]: r for r in result["scaling"]}
    if 8192 in scale and 2048 in scale:
        big, mid = scale[8192], scale[2048]
        linear = (big["seconds"] / big["megapixels"]) / (mid["seconds"] / mid["megapixels"])
        out.append(["8192² tiled: peak RSS ≤ 1 GB (issue 13)", f"{big['peak_rss_mb']:.0f} MB",
                    "", "yes" if big["peak_rss_mb"] <= 1024 else "no"])
        out.append(["8192² time linear in pixels (s/MP vs 2048²)",
                    f"{big['seconds'] / big['megapixels']:.3f} vs "
                    f"{mid['seconds'] / mid['megapixels']:.3f} s/MP", f"{linear:.2f}",
                    "yes" if linear <= 1.25 else "no"])
    return out


def plots(result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in [*result["served"].items(), ("naive baseline", result["naive"])]:
        ax.plot([r["concurrency"] for r in rows], [r["requests_per_s"] for r in rows],
                marker="o", label=name)
    ax.axhline(result["limit"]["flop_bound_fp32_img_s"], ls="--", c="grey",
               label="fp32 FLOP-bound")
    ax.set(xscale="log", xlabel="concurrent clients", ylabel="images/s (256² JPEG)",
           title="served throughput")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    names.append("throughput.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    name, rows = next(iter(result["served"].items()))
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        ax.plot([r["concurrency"] for r in rows], [r[q] for r in rows], marker="o", label=q)
    ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
           title=f"latency percentiles ({name})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    names.append("latency.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = result["scaling"]
    ax.plot([r["megapixels"] for r in rows], [r["seconds"] for r in rows], marker="o")
    ax.set(xscale="log", yscale="log", xlabel="megapixels", ylabel="seconds",
           title="latency vs image size (tiled above 512²)")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=90)
    names.append("scaling.png")
    plt.close(fig)
    return names


def write_report(result: dict, out: Path) -> None:
    lim = result["limit"]
    parts = ["# deconvseg benchmark", "",
             f"One run of `python -m bench` ({result['seconds']} s), checkpoint "
             f"`{result['checkpoint']}`, torch {result['torch']}, {result['threads']} threads.",
             "", "## Targets", "",
             _table(["target", "measured", "ratio", "met"], targets(result)),
             "", "## 1. The limit", "",
             _table(["GEMM fp32 GFLOP/s", "GEMM bf16 GFLOP/s", "model GFLOPs / 256²",
                     "FLOP-bound fp32 img/s", "FLOP-bound bf16 img/s"],
                    [[lim["gemm_fp32_gflops"], lim["gemm_bf16_gflops"], lim["model_gflops_256"],
                      lim["flop_bound_fp32_img_s"], lim["flop_bound_bf16_img_s"]]]),
             "", "## 2. In-process (model only)", "",
             _table(["backend", "engine", "size", "batch", "workers", "img/s", "ms / batch"],
                    [[r["backend"], r.get("engine", "eager"), f"{r['size']}²", r["batch"],
                      r.get("workers", 1), r["images_per_s"], r["latency_ms"]]
                     for r in result["inprocess"]]),
             "", "## 2b. Engines and alternatives (batch 1, interleaved)", "",
             _table(["backend", "size", "setup s", "median ms", "best ms", "img/s",
                     "mask agreement with fp32"],
                    [[r["backend"], r.get("size", "256x256"), r.get("setup_s", ""),
                      r.get("latency_ms", ""), r.get("best_ms", ""),
                      r.get("images_per_s", r.get("error", "")), r.get("agreement", "")]
                     for r in result.get("alternatives", [])]),
             "", "## 2c. Stage costs of one 256² request (the service's own functions)", "",
             _table(["stage", "ms"], [[r["stage"], r["ms"]] for r in result.get("stages", [])]),
             "", "## 3–4. Served (256² JPEG, load generator in a separate process)", ""]
    rows = []
    for name, series in [*result["served"].items(), ("naive baseline", result["naive"])]:
        rows += [[name, r["concurrency"], r["requests_per_s"], r["p50_ms"], r["p95_ms"],
                  r["p99_ms"], r["errors"], r.get("server_cpu_ms_per_request", ""),
                  r.get("event_loop_cpu_ms_per_request", ""),
                  r.get("client_cpu_ms_per_request", "")] for r in series]
    parts.append(_table(["server", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
                         "server CPU ms/req", "of which event loop", "load-generator CPU ms/req"],
                        rows))
    parts += ["", "## 5. Scaling (decode → preprocess → predict → PNG, fresh process each)", "",
              _table(["side", "MP", "seconds", "s / MP", "peak RSS MB", "tiled"],
                     [[r["side"], r["megapixels"], r["seconds"],
                       round(r["seconds"] / r["megapixels"], 3), r["peak_rss_mb"], r["tiled"]]
                      for r in result["scaling"]]), ""]
    if "outputs" in result:
        o = result["outputs"]
        parts += ["", f"## 6. Response formats at {o['size'][0]}×{o['size'][1]} "
                  f"({o['objects']} objects; inference {o['inference_ms']} ms)", "",
                  outputs_table(o), ""]
    parts += [f"![{n}]({n})" for n in plots(result, out)]
    (out / "report.md").write_text("\n".join(parts) + "\n")


def outputs_table(o: dict) -> str:
    """`bench.outputs`' rows as the README's table."""
    return _table(["format", "encode ms", "with gzip ms", "share of inference", "bytes",
                   "gzip bytes", "bytes ÷ PNG mask (raw / gzip)"],
                  [[r["format"], r["encode_ms"], r.get("gzip_encode_ms") or "—",
                    f"{r['share_of_inference']:.1%}", f"{r['bytes']:,}", f"{r['gzip_bytes']:,}",
                    f"{r['bytes_vs_png']} / {r['gzip_vs_png']}"] for r in o["rows"]])
