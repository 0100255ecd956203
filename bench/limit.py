"""The hardware limit: GEMM peak GFLOP/s (fp32, bf16) and the model's FLOP-bound images/s."""

from __future__ import annotations

import time

import torch


def gemm_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best sustained GFLOP/s of an n×n @ n×n matmul (2·n³ FLOPs) over `seconds`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def limits(model_flops: int) -> dict:
    fp32, bf16 = gemm_gflops(torch.float32), gemm_gflops(torch.bfloat16)
    return {"threads": torch.get_num_threads(), "gemm_fp32_gflops": round(fp32, 1),
            "gemm_bf16_gflops": round(bf16, 1), "model_gflops_256": round(model_flops / 1e9, 3),
            "flop_bound_fp32_img_s": round(fp32 * 1e9 / model_flops, 1),
            "flop_bound_bf16_img_s": round(bf16 * 1e9 / model_flops, 1)}
