"""Built-in GPU profiles: data-sheet peaks plus default (uncalibrated) efficiencies.

Units follow the schema: `memory_GiB` is 2**30 bytes as the driver reports the device
(`nvidia-smi` total, MiB / 1024), bandwidths are 1e9 bytes/s (NVLink and PCIe per direction),
`peak_tflops` are dense (non-sparse) tensor-core figures per dtype.

Sources (see data/calibration/README.md for the table these follow):
- NVIDIA A100, H100, H200, H800, B200, GB200 and L40S data sheets (dense = sparse / 2).
- Driver-reported memory (`nvidia-smi` "Memory-Usage" total): A100-SXM4-80GB 81920 MiB,
  H100 80GB HBM3 / H800 81559 MiB, H200 143771 MiB, B200 183359 MiB, GB200 189471 MiB,
  L40S 46068 MiB.

Efficiencies: on Hopper they come from kernel timings on an H100 SXM (docs/cost_model.md §5:
llama-70B-shaped GEMMs through cuBLAS reach 0.66–0.72 of dense peak at ≥ 1k rows in BF16
and FP8, weight streaming at ≤ 128 rows 0.77–0.84 of HBM peak, torch SDPA prefill attention
0.46–0.64 of BF16 peak). The Hopper M½ and per-sequence decode cost come from H100 timings at
the calibration shapes and the end-to-end calibration against calibration/cases.csv
(docs/calibration.md, `python benchmarks/calibrate.py`). Every other profile carries the same
terms, carried over by their physical causes (`_scaled_terms`): M½ by SM count, the per-kernel
floor and per-sequence decode cost by SM clock (data-sheet boost clocks: A100 1,410 MHz,
H100 / H200 / H800 1,980, B200 / GB200 1,965, L40S 2,520); efficiencies keep the Hopper values
on Blackwell (same cuBLAS / FlashAttention generation of kernels) and their starting points on
A100 and L40S (docs/calibration.md §9).
"""

from __future__ import annotations

from typing import TypedDict

from clustersim.config.schema import DType, HardwareSpec

MIB_PER_GIB = 1024.0


def _gib(mib: float) -> float:
    """Driver MiB → GiB (2**30 bytes), rounded to 0.01 GiB."""
    return round(mib / MIB_PER_GIB, 2)


_HOPPER_PEAKS: dict[DType, float] = {"bf16": 989.0, "fp16": 989.0, "fp8": 1979.0}
# Hopper, from H100 kernel timings at the calibration cases' shapes and the end-to-end
# calibration against TensorRT-LLM v0.17 max-throughput runs (docs/calibration.md):
# FP8 layer GEMMs of TP-sliced llama-70B shapes launched back to back reach 0.50–0.52 of peak
# at 250–1,536 rows and 0.59–0.66 at 1–2k: with matmul_efficiency 0.68 the least-squares M½ is
# 64 rows. Every decoding sequence costs 0.2 µs of GPU time per layer beyond its KV read (the
# one end-to-end fitted value; the H200 rows of the same table, not fitted, confirm it).
HOPPER_MATMUL_HALF_TOKENS = 64.0  # GEMM rows at half of matmul_efficiency
HOPPER_DECODE_SEQ_OVERHEAD_US = 0.2  # µs per decoding sequence per layer
HOPPER_KERNEL_FLOOR_US = 3.0  # least time of one kernel back to back in a graph / stream
HOPPER_SMS = 132
HOPPER_BOOST_MHZ = 1980.0


def _by_sms(hopper_value: float, sms: int) -> float:
    """M½ scales with the SM count: it is the GEMM height at which a TP-sliced GEMM's output
    tiles fill half the machine, so more SMs need proportionally more rows."""
    return round(hopper_value * sms / HOPPER_SMS, 1)


def _by_clock(hopper_value: float, boost_mhz: float) -> float:
    """Fixed per-kernel and per-sequence costs are latency-bound work (launch, prologue, a
    wave of small memory operations): they scale with the inverse of the SM clock."""
    return round(hopper_value * HOPPER_BOOST_MHZ / boost_mhz, 2)


class ScaledTerms(TypedDict):
    matmul_half_tokens: float
    decode_seq_overhead_us: float
    kernel_floor_us: float


def _scaled_terms(sms: int, boost_mhz: float) -> ScaledTerms:
    """The Hopper-fitted terms carried over to another GPU by their physical causes
    (docs/calibration.md §9)."""
    return ScaledTerms(
        matmul_half_tokens=_by_sms(HOPPER_MATMUL_HALF_TOKENS, sms),
        decode_seq_overhead_us=_by_clock(HOPPER_DECODE_SEQ_OVERHEAD_US, boost_mhz),
        kernel_floor_us=_by_clock(HOPPER_KERNEL_FLOOR_US, boost_mhz),
    )


_HOPPER_TERMS = _scaled_terms(HOPPER_SMS, HOPPER_BOOST_MHZ)

_PROFILES: tuple[HardwareSpec, ...] = (
    HardwareSpec(
        name="a100-80gb",  # A100 SXM4 80GB: no FP8 tensor cores (fp8 falls back to bf16)
        memory_GiB=_gib(81920),
        hbm_bandwidth_GBps=2039.0,
        peak_tflops={"bf16": 312.0, "fp16": 312.0},
        sm_count=108,
        nvlink_bandwidth_GBps=300.0,  # NVLink 3: 600 GB/s both directions
        pcie_bandwidth_GBps=32.0,  # Gen4 x16
        matmul_efficiency=0.7,
        attention_efficiency=0.5,
        hbm_efficiency=0.8,
        **_scaled_terms(108, 1410.0),
    ),
    HardwareSpec(
        name="h100-sxm",
        memory_GiB=_gib(81559),
        hbm_bandwidth_GBps=3350.0,
        peak_tflops=dict(_HOPPER_PEAKS),
        sm_count=HOPPER_SMS,
        nvlink_bandwidth_GBps=450.0,  # NVLink 4: 900 GB/s both directions
        pcie_bandwidth_GBps=64.0,  # Gen5 x16
        matmul_efficiency=0.68,
        attention_efficiency=0.55,
        hbm_efficiency=0.8,
        nvls=True,
        **_HOPPER_TERMS,
    ),
    HardwareSpec(
        name="h200",  # H200 SXM 141GB HBM3e
        # every catalog model's GEMMs and LM head at TP 1-8, bf16 / fp8, timed on an H200
        # (benchmarks/gpu/operators_h200_2026-12-04.json; docs/calibration.md §4)
        operator_table="h200",
        memory_GiB=_gib(143771),
        hbm_bandwidth_GBps=4800.0,
        peak_tflops=dict(_HOPPER_PEAKS),
        sm_count=HOPPER_SMS,
        nvlink_bandwidth_GBps=450.0,
        pcie_bandwidth_GBps=64.0,
        matmul_efficiency=0.68,
        attention_efficiency=0.55,
        hbm_efficiency=0.8,
        nvls=True,
        **_HOPPER_TERMS,
    ),
    HardwareSpec(
        name="h800",  # H100 compute, NVLink cut to 400 GB/s both directions
        memory_GiB=_gib(81559),
        hbm_bandwidth_GBps=3350.0,
        peak_tflops=dict(_HOPPER_PEAKS),
        sm_count=HOPPER_SMS,
        nvlink_bandwidth_GBps=200.0,
        pcie_bandwidth_GBps=64.0,
        matmul_efficiency=0.68,
        attention_efficiency=0.55,
        hbm_efficiency=0.8,
        nvls=True,
        **_HOPPER_TERMS,
    ),
    HardwareSpec(
        name="b200",  # HGX B200 180GB HBM3e
        memory_GiB=_gib(183359),
        hbm_bandwidth_GBps=8000.0,
        peak_tflops={"bf16": 2250.0, "fp16": 2250.0, "fp8": 4500.0, "fp4": 9000.0},
        sm_count=148,
        nvlink_bandwidth_GBps=900.0,  # NVLink 5: 1.8 TB/s both directions
        pcie_bandwidth_GBps=64.0,
        matmul_efficiency=0.68,
        attention_efficiency=0.55,
        hbm_efficiency=0.8,
        nvls=True,
        **_scaled_terms(148, 1965.0),
    ),
    HardwareSpec(
        name="gb200",  # one Blackwell GPU of a GB200 superchip (NVL72 rack: 72-GPU NVLink domain)
        memory_GiB=_gib(189471),
        hbm_bandwidth_GBps=8000.0,
        peak_tflops={"bf16": 2500.0, "fp16": 2500.0, "fp8": 5000.0, "fp4": 10000.0},
        sm_count=148,
        nvlink_bandwidth_GBps=900.0,
        pcie_bandwidth_GBps=64.0,
        matmul_efficiency=0.68,
        attention_efficiency=0.55,
        hbm_efficiency=0.8,
        nvls=True,
        **_scaled_terms(148, 1965.0),
    ),
    HardwareSpec(
        name="l40s",  # Ada PCIe card: 48 GB GDDR6, no NVLink
        memory_GiB=_gib(46068),
        hbm_bandwidth_GBps=864.0,
        peak_tflops={"bf16": 362.05, "fp16": 362.05, "fp8": 733.0},
        sm_count=142,
        nvlink_bandwidth_GBps=0.0,
        pcie_bandwidth_GBps=32.0,  # Gen4 x16: 64 GB/s both directions
        matmul_efficiency=0.65,
        attention_efficiency=0.5,
        hbm_efficiency=0.8,
        **_scaled_terms(142, 2520.0),
    ),
)

HARDWARE: dict[str, HardwareSpec] = {hw.name: hw for hw in _PROFILES}


def hardware_names() -> list[str]:
    """Names of the built-in hardware profiles, sorted."""
    return sorted(HARDWARE)


def get_hardware(name: str) -> HardwareSpec:
    """The built-in profile `name`; KeyError listing the known names otherwise."""
    try:
        return HARDWARE[name]
    except KeyError:
        raise KeyError(f"unknown hardware {name!r}; known: {', '.join(hardware_names())}") from None
