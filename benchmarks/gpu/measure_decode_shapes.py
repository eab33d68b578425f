"""Kernel timings at the per-GPU shapes of the calibration cases (needs PyTorch + CUDA).

  python benchmarks/gpu/measure_decode_shapes.py --out measured.json

Unlike measure_gpu.py, every measurement launches its kernels back to back (10 iterations
between two CUDA events, median of 5), as an engine does, so the CPU launch cost (~20 µs per
torch call) overlaps the GPU work instead of being timed with it. Shapes (docs/calibration.md):
  * decode attention (SDPA, one query token, BF16 KV: torch has no FP8 SDPA) for the running
    batch of each 128/2048 case at its mean context of 1,152 tokens, with that TP's heads;
  * llama-3.1-70b layer GEMMs (qkv, o, gate_up, down) in FP8 (torch._scaled_mm) at those batch
    sizes and at 256 / 1024 / 2048 rows, per TP.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch

CTX = 1152  # mean context of a 128-in / 2048-out request over its decode (tokens)
# (model, tp, running batch of the H100 case, query heads, KV heads)
DECODE_CASES = [
    ("llama-3.1-70b", 1, 29, 64, 8),
    ("llama-3.1-70b", 2, 254, 32, 4),
    ("llama-3.1-70b", 4, 702, 16, 2),
    ("llama-3.1-70b", 8, 1536, 8, 1),
    ("mixtral-8x7b", 1, 246, 32, 8),
    ("mixtral-8x7b", 2, 768, 16, 4),
    ("mixtral-8x7b", 4, 1928, 8, 2),
    ("mixtral-8x7b", 8, 3000, 4, 1),
]
GEMM_ROWS = {
    1: [29, 256, 1024, 2048],
    2: [254, 1024, 2048],
    4: [702, 1024, 2048],
    8: [1536, 1024, 2048],
}


def time_ms(fn: Callable[[], Any], inner: int = 10, reps: int = 5) -> float:
    """Milliseconds per call of fn, launched `inner` times back to back."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


def decode(batch: int, heads: int, kv_heads: int) -> dict[str, float]:
    q = torch.randn(batch, heads, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, CTX, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    fn = torch.nn.functional.scaled_dot_product_attention
    ms = time_ms(lambda: fn(q, k, v, enable_gqa=True))
    kv = 2 * batch * kv_heads * CTX * 128 * 2  # bytes
    return {"ms": ms, "kv_GBps": kv / ms / 1e6, "us_per_seq": ms * 1e3 / batch}


def gemm_layer(tp: int, m: int) -> dict[str, float]:
    shapes = [(10240 // tp, 8192), (8192, 8192 // tp), (57344 // tp, 8192), (8192, 28672 // tp)]
    one = torch.ones((), device="cuda")
    ops = []
    for n, k in shapes:
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16).to(torch.float8_e4m3fn)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16).to(torch.float8_e4m3fn).t()
        ops.append((a, w))

    def layer() -> None:
        for a, w in ops:
            torch._scaled_mm(a, w, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)

    ms = time_ms(layer)
    params = sum(n * k for n, k in shapes)
    return {"ms": ms, "tflops": 2 * m * params / ms / 1e9, "weight_GBps": params / ms / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "sm_count": props.multi_processor_count,
        "ctx": CTX,
    }
    out["decode_attention"] = {
        f"{m}/tp{tp}/b{b}": decode(b, h, kv) for m, tp, b, h, kv in DECODE_CASES
    }
    out["gemm_layer_fp8"] = {
        f"tp{tp}/m{m}": gemm_layer(tp, m) for tp, rows in GEMM_ROWS.items() for m in rows
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
