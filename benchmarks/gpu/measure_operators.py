"""Time the operators the cost model prices, at the shapes it prices them, beside its prediction.

    python benchmarks/gpu/measure_operators.py --gpu h200 --out benchmarks/gpu/operators_h200.json
    python benchmarks/gpu/measure_operators.py --gpu h200 --dry-run   # no GPU: shapes + model
    python benchmarks/gpu/measure_operators.py --gpu h200 --quick     # fewer shapes (~2 min)

Issue 9 item 6. Every record names its operator and shape, the measured time (µs, median of
timed repeats, kernels launched back to back as inside an engine) and the time the simulator's
cost model gives the same operator on the same GPU profile (`predicted_us`, from
model/kernels.py, attention_cost.py and moe_cost.py; no simulation), so the JSON is the
comparison: `measured_us / predicted_us` per operator family and shape. `--dry-run` needs no
PyTorch: it writes the shapes and predictions with `measured_us` null (tests run it).

Operators (all on one GPU; TP-sliced shapes as one rank of a TP group runs them):
  * launch floors: an empty-ish kernel back to back eagerly and replayed in a CUDA graph;
  * dense GEMMs of every projection (qkv / o or MLA's five, gate_up / down, shared experts,
    router) of llama-3.1-8b / 70b / 405b, qwen3-235b-a22b and deepseek-v3 at TP 1..8, bf16
    and fp8, at 1..8,192 rows;
  * MoE grouped GEMMs (gate_up + down over the experts of one EP rank, equal tokens per
    expert, `torch.bmm` as the grouped kernel) at 1..256 tokens per expert;
  * MoE routing: router GEMM, softmax / sigmoid, top-k, permute (index gather) and
    unpermute (weighted scatter-add), 1..4,096 tokens;
  * decode attention: GQA (SDPA, contiguous KV) and absorbed MLA (latent KV, two batched
    GEMMs + softmax) at batch 1..512 and context 512..32k, within a memory budget.

What it does not time: paged-KV indirection (contiguous KV here; the engines' paged kernels
read the same bytes), collectives (one GPU), FlashMLA / DeepGEMM themselves (PyTorch kernels
stand in: the times are an upper bound on what tuned kernels reach).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clustersim.catalog.engines import get_engine
from clustersim.catalog.hardware import get_hardware
from clustersim.catalog.models import get_model
from clustersim.config.schema import HardwareSpec, ModelSpec, Precision
from clustersim.model.attention_cost import attention_cost
from clustersim.model.kernels import Gemm, linear_cost
from clustersim.model.moe_cost import moe_coefficients
from clustersim.model.params import kv_heads_per_rank

FORMAT = "clustersim-operator-profile/1"
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
QUICK_ROWS = (1, 16, 64, 256, 1024, 8192)
TOKENS_PER_EXPERT = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUTING_TOKENS = (1, 16, 128, 1024, 4096)
DECODE_BATCH = (1, 8, 32, 128, 512)
DECODE_CONTEXT = (512, 2048, 8192, 32768)
KV_BUDGET_BYTES = 24 * 2**30  # one attention call's K + V, so every GPU profile fits
DENSE = (
    ("llama-3.1-8b", (1, 2, 4, 8)),
    ("llama-3.1-70b", (1, 2, 4, 8)),
    ("llama-3.1-405b", (4, 8)),
    ("qwen3-235b-a22b", (4, 8)),
    ("deepseek-v3", (8,)),
)
GROUPED = (
    ("deepseek-v3", (8, 32, 64, 256)),
    ("qwen3-235b-a22b", (8, 32, 128)),
    ("mixtral-8x7b", (1, 8)),
)  # model, EP sizes (experts per rank = E / ep)
ATTENTION = (("llama-3.1-8b", (1,)), ("llama-3.1-70b", (1, 8)), ("deepseek-v3", (1, 8)))


@dataclass
class Record:
    """One operator at one shape: what the cost model predicts and what the GPU measured."""

    family: str  # launch | gemm | grouped_gemm | moe_routing | decode_attention
    model: str
    operator: str  # e.g. qkv, gate_up, experts, gqa, mla
    dtype: str
    shape: dict[str, int]
    predicted_us: float
    measured_us: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def precision_of(dtype: str) -> Precision:
    return Precision(weights=dtype, activations=dtype, kv_cache=dtype)  # type: ignore[arg-type]


# ------------------------------------------------------------------ shapes and predictions


def projection_shapes(model: ModelSpec, tp: int) -> list[tuple[str, int, int, int]]:
    """(name, k, n, batch) of one rank's projections, in linear_cost's order for one dense
    layer (GQA: qkv, o, gate_up, down) or one MoE layer (MLA five, shared gate_up / down,
    router); batch > 1: a batched GEMM over heads (MLA's absorbed W_UK / W_UV)."""
    h, heads = model.hidden_size, model.num_attention_heads // tp
    if model.uses_mla:
        nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
        lkv, lq = model.kv_lora_rank, model.q_lora_rank
        q_out = heads * (nope + rope)
        if lq:
            att = [("qkv_a", h, lq + lkv + rope, 1), ("q_b", lq, q_out, 1)]
        else:
            att = [("kv_a", h, lkv + rope, 1), ("q", h, q_out, 1)]
        att += [("w_uk", nope, lkv, heads), ("w_uv", lkv, v, heads), ("o", heads * v, h, 1)]
    else:
        d = model.head_dim
        qkv = (heads + 2 * kv_heads_per_rank(model, tp)) * d
        att = [("qkv", h, qkv, 1), ("o", heads * d, h, 1)]
    if not model.is_moe:
        inter = model.intermediate_size // tp
        return [*att, ("gate_up", h, 2 * inter, 1), ("down", inter, h, 1)]
    shared = model.num_shared_experts * model.moe_intermediate_size // tp
    mlp = [("shared_gate_up", h, 2 * shared, 1), ("shared_down", shared, h, 1)] if shared else []
    return [*att, *mlp, ("router", h, model.num_experts, 1)]


def layer_gemms(model: ModelSpec, hw: HardwareSpec, dtype: str, tp: int) -> list[Gemm]:
    layers = (1, 0, 1) if model.is_moe else (1, 1, 0)
    return list(linear_cost(model, hw, precision_of(dtype), tp, layers, get_engine("vllm")).gemms)


def gemm_predicted_us(g: Gemm, rows: int, hw: HardwareSpec) -> float:
    """The cost model's time of one GEMM kernel at `rows` rows (model/stage_cost.py's rule)."""
    floor = hw.kernel_floor_us * 1e-6
    t = max((rows + hw.matmul_half_tokens) * g.flop_s, g.weight_s + rows * g.act_s, floor)
    return 1e6 * t / g.layers


def gemm_records(hw: HardwareSpec, rows: tuple[int, ...]) -> Iterator[Record]:
    for name, tps in DENSE:
        model = get_model(name)
        for tp in tps:
            for dtype in ("bf16", "fp8"):
                gemms = layer_gemms(model, hw, dtype, tp)
                shapes = projection_shapes(model, tp)
                for (op, k, n, batch), g in zip(shapes, gemms, strict=True):
                    for m in rows:
                        shape = {"tp": tp, "m": m, "k": k, "n": n, "batch": batch}
                        yield Record("gemm", name, op, dtype, shape, gemm_predicted_us(g, m, hw))


def grouped_records(hw: HardwareSpec, tokens: tuple[int, ...]) -> Iterator[Record]:
    for name, eps in GROUPED:
        model = get_model(name)
        for ep in eps:  # every EP size here is ≤ the expert count: whole experts per rank
            experts = model.num_experts // ep
            coeffs, _ = moe_coefficients(
                model, hw, precision_of("bf16"), (1, ep, 1), hw.matmul_half_tokens, 0.0
            )
            for tpe in tokens:
                pairs = float(tpe * experts)
                comp = (pairs + coeffs.half_pairs * experts) * coeffs.flop_s_per_pair
                mem = experts * coeffs.weight_s_per_expert + pairs * coeffs.act_s_per_pair
                shape = {
                    "ep": ep,
                    "experts": experts,
                    "tokens_per_expert": tpe,
                    "hidden": model.hidden_size,
                    "inter": model.moe_intermediate_size,
                }
                yield Record("grouped_gemm", name, "experts", "bf16", shape, 1e6 * max(comp, mem))


def routing_records(hw: HardwareSpec, tokens: tuple[int, ...]) -> Iterator[Record]:
    """Router GEMM + the engine's MoE kernels (top-k, permute, activation, unpermute): the
    model charges the router as a GEMM and each MoE kernel at least a kernel floor."""
    engine = get_engine("vllm")
    for name in ("deepseek-v3", "qwen3-235b-a22b"):
        model = get_model(name)
        router = layer_gemms(model, hw, "bf16", 1)[-1]
        for t in tokens:
            predicted = gemm_predicted_us(router, t, hw)
            predicted += engine.moe_kernels * hw.kernel_floor_us
            shape = {
                "tokens": t,
                "hidden": model.hidden_size,
                "experts": model.num_experts,
                "top_k": model.experts_per_token,
            }
            yield Record("moe_routing", name, "router_topk_permute", "bf16", shape, predicted)


def attention_records(hw: HardwareSpec) -> Iterator[Record]:
    for name, tps in ATTENTION:
        model = get_model(name)
        for tp in tps:
            cost = attention_cost(model, hw, precision_of("bf16"), tp, 1)
            heads = model.num_attention_heads // tp
            if model.uses_mla:
                latent = model.kv_lora_rank + model.qk_rope_head_dim
                kv_heads, head_dim, bytes_per_token = 1, latent, 2 * latent
                op = "mla"
            else:
                kv_heads, head_dim = kv_heads_per_rank(model, tp), model.head_dim
                bytes_per_token, op = 2 * 2 * kv_heads * head_dim, "gqa"
            for batch in DECODE_BATCH:
                for ctx in DECODE_CONTEXT:
                    if batch * ctx * bytes_per_token > KV_BUDGET_BYTES:
                        continue
                    t = batch * ctx * cost.decode_s_per_token + batch * cost.decode_s_per_seq
                    t = max(t, hw.kernel_floor_us * 1e-6)
                    shape = {
                        "tp": tp,
                        "batch": batch,
                        "context": ctx,
                        "q_heads": heads,
                        "kv_heads": kv_heads,
                        "head_dim": head_dim,
                    }
                    yield Record(
                        "decode_attention",
                        name,
                        op,
                        "bf16",
                        shape,
                        1e6 * t,
                        notes={"kv_bytes": batch * ctx * bytes_per_token},
                    )


def all_records(hw: HardwareSpec, quick: bool) -> list[Record]:
    rows = QUICK_ROWS if quick else ROWS
    tpe = TOKENS_PER_EXPERT[::2] if quick else TOKENS_PER_EXPERT
    launch = [
        Record("launch", "-", mode, "-", {}, hw.kernel_floor_us) for mode in ("graph", "eager")
    ]
    return [
        *launch,
        *gemm_records(hw, rows),
        *grouped_records(hw, tpe),
        *routing_records(hw, ROUTING_TOKENS),
        *attention_records(hw),
    ]


# ------------------------------------------------------------------ measuring (PyTorch)


def measure(records: list[Record]) -> None:  # pragma: no cover - needs a CUDA GPU
    """Fill every record's measured_us in place."""
    import torch

    timer = Timer(torch)
    for r in records:
        try:
            r.measured_us = MEASURE[r.family](torch, timer, r)
        except (RuntimeError, TypeError, AttributeError) as err:  # unsupported dtype / op
            r.notes["error"] = f"{type(err).__name__}: {err}"[:200]
        torch.cuda.empty_cache()


class Timer:  # pragma: no cover - needs a CUDA GPU
    """Median µs of `inner` back-to-back calls, over `reps` CUDA-event timings."""

    def __init__(self, torch: Any, inner: int = 10, reps: int = 5) -> None:
        self.torch, self.inner, self.reps = torch, inner, reps

    def __call__(self, fn: Callable[[], Any]) -> float:
        torch = self.torch
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.inner):
                fn()
            end.record()
            torch.cuda.synchronize()
            times.append(1e3 * start.elapsed_time(end) / self.inner)
        return statistics.median(times)


def _launch(torch: Any, timer: Timer, r: Record) -> float:  # pragma: no cover
    x = torch.zeros(1, device="cuda")
    n = 200
    if r.operator == "eager":

        def eager() -> None:
            for _ in range(n):
                x.add_(1.0)

        return timer(eager) / n
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        x.add_(1.0)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            x.add_(1.0)
    return timer(graph.replay) / n


def _matmul(
    torch: Any, dtype: str, m: int, k: int, n: int
) -> Callable[[], Any]:  # pragma: no cover
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    if dtype == "bf16":
        return lambda: a @ w.t()
    a8, w8 = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")
    return lambda: torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def _gemm(torch: Any, timer: Timer, r: Record) -> float:  # pragma: no cover
    s = r.shape
    m, k, n, batch = s["m"], s["k"], s["n"], s["batch"]
    if batch > 1:  # per-head batched GEMM (bf16; fp8 batched GEMMs are engine-specific)
        a = torch.randn(batch, m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(batch, k, n, device="cuda", dtype=torch.bfloat16)
        return timer(lambda: torch.bmm(a, w))
    # fp8 GEMMs need dimensions divisible by 16
    pad = (lambda v: -(-v // 16) * 16) if r.dtype == "fp8" else (lambda v: v)
    return timer(_matmul(torch, r.dtype, pad(m), pad(k), pad(n)))


def _grouped(torch: Any, timer: Timer, r: Record) -> float:  # pragma: no cover
    s = r.shape
    e, t, h, i = s["experts"], s["tokens_per_expert"], s["hidden"], s["inter"]
    dt_ = torch.bfloat16
    x = torch.randn(e, t, h, device="cuda", dtype=dt_)
    w1 = torch.randn(e, h, 2 * i, device="cuda", dtype=dt_)
    w2 = torch.randn(e, i, h, device="cuda", dtype=dt_)

    def experts() -> None:
        y = torch.bmm(x, w1)
        torch.bmm(y[..., :i], w2)

    return timer(experts)


def _routing(torch: Any, timer: Timer, r: Record) -> float:  # pragma: no cover
    s = r.shape
    t, h, e, k = s["tokens"], s["hidden"], s["experts"], s["top_k"]
    x = torch.randn(t, h, device="cuda", dtype=torch.bfloat16)
    wr = torch.randn(e, h, device="cuda", dtype=torch.bfloat16)

    def route() -> None:
        scores = torch.sigmoid((x @ wr.t()).float())
        weights, idx = torch.topk(scores, k, dim=-1)
        order = torch.argsort(idx.flatten())
        permuted = x.index_select(0, order // k)
        out = torch.zeros_like(x)
        out.index_add_(0, order // k, permuted * weights.flatten()[order, None].to(x.dtype))

    return timer(route)


def _attention(torch: Any, timer: Timer, r: Record) -> float:  # pragma: no cover
    s = r.shape
    b, ctx, hq, hk, d = s["batch"], s["context"], s["q_heads"], s["kv_heads"], s["head_dim"]
    q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(b, hk, ctx, d, device="cuda", dtype=torch.bfloat16)
    if r.operator == "mla":  # absorbed MLA: scores over the latent + rope, values = latent part
        lora = d - get_model(r.model).qk_rope_head_dim

        def mla() -> None:
            p = torch.softmax((q @ kv.transpose(-1, -2)).float() * d**-0.5, dim=-1)
            p.to(kv.dtype) @ kv[..., :lora]

        return timer(mla)
    v = torch.randn_like(kv)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return timer(lambda: sdpa(q, kv, v, enable_gqa=hq != hk))


MEASURE: dict[str, Callable[[Any, Timer, Record], float]] = {
    "launch": _launch,
    "gemm": _gemm,
    "grouped_gemm": _grouped,
    "moe_routing": _routing,
    "decode_attention": _attention,
}


# ------------------------------------------------------------------ driver


def profile(gpu: str, records: list[Record], device: dict[str, str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "gpu": gpu,
        "device": device,
        "date": dt.date.today().isoformat(),
        "records": [asdict(r) for r in records],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", required=True, help="the clustersim hardware profile to predict")
    parser.add_argument("--out", type=Path, help="JSON file (default: stdout summary only)")
    parser.add_argument("--dry-run", action="store_true", help="shapes + predictions, no GPU")
    parser.add_argument("--quick", action="store_true", help="fewer rows and token counts")
    args = parser.parse_args(argv)
    hw = get_hardware(args.gpu)
    records = all_records(hw, args.quick)
    device = {"name": "dry run"}
    if not args.dry_run:  # pragma: no cover - needs a CUDA GPU
        import torch

        measure(records)
        device = {
            "name": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": str(torch.version.cuda),
        }
    if args.out:
        args.out.write_text(json.dumps(profile(args.gpu, records, device), indent=1) + "\n")
    counts: dict[str, int] = {}
    for r in records:
        counts[r.family] = counts.get(r.family, 0) + 1
    print(f"{args.gpu}: {len(records)} records " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
