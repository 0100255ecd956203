"""The benchmark report computes its target ratios from one result, and writes tables and plots."""

import pytest

from bench.limit import gemm_gflops
from bench.report import targets, write_report


def fake_result():
    def series(rps, p50):
        return [{"concurrency": c, "requests_per_s": rps, "p50_ms": p50, "p95_ms": p50 * 1.1,
                 "p99_ms": p50 * 1.2, "errors": 0} for c in (1, 16, 32)]

    return {
        "checkpoint": "weights/model.pt", "torch": "x", "threads": 2, "seconds": 1.0,
        "limit": {"gemm_fp32_gflops": 200.0, "gemm_bf16_gflops": 400.0,
                  "model_gflops_256": 4.0, "flop_bound_fp32_img_s": 50.0,
                  "flop_bound_bf16_img_s": 100.0},
        "inprocess": [
            {"backend": "fp32", "engine": "torchscript", "size": 256, "batch": 1, "workers": 1,
             "images_per_s": 40.0, "latency_ms": 25.0},
            {"backend": "fp32", "engine": "eager", "size": 256, "batch": 1, "workers": 1,
             "images_per_s": 20.0, "latency_ms": 50.0},
        ],
        "served": {"fp32 torchscript, 2 workers, batching on": series(42.0, 28.0),
                   "fp32 eager, 1 worker, batching on": series(30.0, 27.0)},
        "naive": series(10.0, 60.0),
        "scaling": [{"side": 2048, "megapixels": 4.0, "seconds": 2.0, "peak_rss_mb": 500,
                     "tiled": True},
                    {"side": 8192, "megapixels": 64.0, "seconds": 36.0, "peak_rss_mb": 1900,
                     "tiled": True}],
    }


def test_targets_are_ratios_of_the_same_run():
    rows = {row[0]: row for row in targets(fake_result())}
    assert rows["served img/s at c=16 ≥ 0.8 × fp32 FLOP-bound"][2:] == ["0.84", "yes"]
    # compared with the same backend *and* engine: torchscript's 40, not eager's 20
    assert rows["served ≥ 0.9 × best in-process (fp32 torchscript, 256²)"][2:] == ["1.05", "yes"]
    assert rows["served ≥ 3 × naive at c=32"][2:] == ["4.20", "yes"]
    assert rows["p50 at c=1 ≤ 1.2 × in-process batch-1 latency"][2:] == ["1.12", "yes"]
    assert rows["8192² tiled: peak RSS ≤ 1 GB (issue 13)"][3] == "no"  # 1,900 MB
    assert rows["8192² time linear in pixels (s/MP vs 2048²)"][2:] == ["1.12", "yes"]


def test_report_writes_markdown_and_plots(tmp_path):
    write_report(fake_result(), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Targets" in report and "naive baseline" in report
    for name in ("throughput.png", "latency.png", "scaling.png"):
        assert (tmp_path / name).stat().st_size > 0 and f"]({name})" in report


def test_gemm_peak_is_positive():
    assert gemm_gflops(__import__("torch").float32, n=64, seconds=0.05) > 0


@pytest.mark.parametrize(("peak_mb", "met"), [(1024, "yes"), (1025, "no")])
def test_the_8192_peak_rss_target_is_one_gibibyte(peak_mb, met):
    result = fake_result()
    result["scaling"][1]["peak_rss_mb"] = peak_mb
    rows = {row[0]: row for row in targets(result)}
    assert rows["8192² tiled: peak RSS ≤ 1 GB (issue 13)"][1:] == [f"{peak_mb} MB", "", met]
