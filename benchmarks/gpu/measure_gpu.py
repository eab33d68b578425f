"""Measure the efficiencies the cost model needs on a real GPU (needs PyTorch + CUDA).

  python benchmarks/gpu/measure_gpu.py --out measured.json

Measures, with CUDA events (median of timed repeats after warm-ups):
  * dense GEMM throughput (bf16, and fp8 via torch._scaled_mm when available) for the linear
    layer shapes of llama-3.1-70b TP1..TP8, over token counts 1..8192;
  * HBM bandwidth: device-to-device copy and a streaming reduction;
  * prefill attention (scaled_dot_product_attention, causal, bf16) FLOP/s;
  * decode attention KV-read bandwidth (one query token per sequence).
The numbers land in docs/calibration.md (section "Measured on a GPU").
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch


def time_ms(fn: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gemm(dtype: str, m: int, n: int, k: int) -> dict[str, float]:
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    if dtype == "bf16":
        ms = time_ms(lambda: a @ b.t())
    else:
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.to(torch.float8_e4m3fn).t()  # column-major second operand
        one = torch.ones((), device="cuda")
        ms = time_ms(
            lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        )
    flops = 2.0 * m * n * k
    weight_bytes = n * k * (2 if dtype == "bf16" else 1)
    return {"ms": ms, "tflops": flops / ms / 1e9, "weight_GBps": weight_bytes / ms / 1e6}


def hbm() -> dict[str, float]:
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    copy_ms = time_ms(lambda: y.copy_(x))
    f = x.view(torch.float32)
    read_ms = time_ms(lambda: f.sum())
    return {
        "copy_GBps_read_plus_write": 2 * x.numel() / copy_ms / 1e6,
        "stream_read_GBps": x.numel() / read_ms / 1e6,
    }


def prefill_attention(seq: int, heads: int, kv_heads: int) -> dict[str, float]:
    batch = max(1, 8192 // seq)
    q = torch.randn(batch, heads, seq, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, seq, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    fn = torch.nn.functional.scaled_dot_product_attention
    ms = time_ms(lambda: fn(q, k, v, is_causal=True, enable_gqa=True))
    pairs = batch * seq * (seq + 1) / 2
    flops = 4.0 * heads * 128 * pairs
    return {"batch": batch, "ms": ms, "tflops": flops / ms / 1e9}


def decode_attention(batch: int, ctx: int, heads: int, kv_heads: int) -> dict[str, float]:
    q = torch.randn(batch, heads, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, ctx, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    fn = torch.nn.functional.scaled_dot_product_attention
    ms = time_ms(lambda: fn(q, k, v, enable_gqa=True))
    kv_bytes = 2 * batch * kv_heads * ctx * 128 * 2
    return {"ms": ms, "kv_GBps": kv_bytes / ms / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "sm_count": torch.cuda.get_device_properties(0).multi_processor_count,
    }
    result["hbm"] = hbm()
    # llama-3.1-70b: hidden 8192, qkv 10240, o 8192, gate+up 57344, down 28672 (÷ tp)
    shapes = {
        f"tp{tp}": [
            (10240 // tp, 8192),
            (8192, 8192 // tp),
            (57344 // tp, 8192),
            (8192, 28672 // tp),
        ]
        for tp in (1, 2, 4, 8)
    }
    tokens = [1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    gemms: dict[str, Any] = {}
    for dtype in ("bf16", "fp8"):
        for name, layer_shapes in shapes.items():
            for m in tokens:
                try:
                    total_ms = 0.0
                    flops = 0.0
                    weight_bytes = 0.0
                    for n, k in layer_shapes:
                        r = gemm(dtype, m, n, k)
                        total_ms += r["ms"]
                        flops += 2.0 * m * n * k
                        weight_bytes += n * k * (2 if dtype == "bf16" else 1)
                    gemms[f"{dtype}/{name}/m{m}"] = {
                        "ms": total_ms,
                        "tflops": flops / total_ms / 1e9,
                        "weight_GBps": weight_bytes / total_ms / 1e6,
                    }
                except Exception as err:  # fp8 may be unavailable in this torch build
                    gemms[f"{dtype}/{name}/m{m}"] = {"error": str(err)[:200]}
    result["gemm_layer"] = gemms
    result["gemm_square_8192"] = {d: gemm(d, 8192, 8192, 8192) for d in ("bf16", "fp8")}
    result["prefill_attention"] = {
        f"seq{s}": prefill_attention(s, 64, 8) for s in (512, 2048, 8192)
    }
    result["decode_attention"] = {
        f"b{b}_ctx{c}": decode_attention(b, c, 64, 8)
        for b, c in ((16, 1024), (64, 1024), (64, 4096), (256, 2048))
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: result[k] for k in ("device", "hbm", "gemm_square_8192")}, indent=1))


if __name__ == "__main__":
    main()
