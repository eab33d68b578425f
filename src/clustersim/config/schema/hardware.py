"""One GPU's peaks and calibrated efficiencies (`hardware:`)."""

import importlib
from typing import Annotated, Any

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from clustersim.config.schema.base import (
    BandwidthGBps,
    DType,
    Fraction,
    Micros,
    Strict,
    omit_when,
)

# Physical ranges (base.py's BandwidthGBps, Micros and these), generous by orders of magnitude
GiBRange = Annotated[float, Field(gt=0, le=1e5)]  # device memory, GiB
TflopsRange = Annotated[float, Field(ge=0.01, le=1e6)]  # a tensor-core peak, TFLOP/s


class HardwareSpec(Strict):
    """One GPU: published peaks plus calibrated efficiencies (see docs/calibration.md).

    `peak_tflops` are dense (non-sparse) figures per dtype; a dtype missing from the map is not
    supported by the tensor cores and falls back to the next wider one.
    """

    name: str
    memory_GiB: GiBRange  # usable device memory as the driver reports it
    hbm_bandwidth_GBps: BandwidthGBps
    peak_tflops: dict[DType, TflopsRange]
    sm_count: Annotated[int, Field(gt=0, le=100_000)] = 132  # SMs (data sheet)
    nvls: bool = False  # NVSwitch with NVLink SHARP (in-switch all-reduce): Hopper and later
    # per direction per GPU; 0 = no NVLink
    nvlink_bandwidth_GBps: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    pcie_bandwidth_GBps: BandwidthGBps = 64.0  # per direction (Gen5 x16 ≈ 64)
    matmul_efficiency: Fraction = 0.7  # achieved / peak on large GEMMs
    # GEMM rows (tokens) at which matmul efficiency is half of matmul_efficiency:
    # eff(M) = matmul_efficiency · M / (M + matmul_half_tokens)
    matmul_half_tokens: Annotated[float, Field(ge=0, le=1e6)] = 16.0
    attention_efficiency: Fraction = 0.5  # achieved / peak for prefill attention FLOPs
    hbm_efficiency: Fraction = 0.8  # achieved / peak HBM bandwidth on streaming reads
    # achieved / peak HBM bandwidth of MoE grouped GEMMs streaming expert weights
    grouped_gemm_hbm_efficiency: Fraction = 0.8
    # achieved / peak HBM bandwidth of the decode-attention KV read (None = hbm_efficiency)
    decode_attention_efficiency: Fraction | None = None
    # fixed GPU time per decoding sequence per layer, beyond its KV read (paged-KV append,
    # block-table walk, Q / output handling of the generation attention path)
    decode_seq_overhead_us: Micros = 0.0
    # GPU-side fixed time per engine step outside the layers' kernels: input copies, graph
    # replay start, the sampling tail (host time is the engine profile's, catalog/engines.py)
    step_overhead_us: Micros = 30.0
    # least GPU time of one kernel, back to back in a stream or graph (launch gap, prologue,
    # one wave, tail): a layer's kernel costs max(roofline, this) (docs/cost_model.md §6)
    kernel_floor_us: Micros = 3.0
    # FlashMLA-style absorbed MLA decode attention: achieved / peak tensor-core rate (its FLOPs
    # per KV byte are high enough that decode attention can be compute-bound)
    mla_decode_efficiency: Fraction = 0.6
    reserved_memory_GiB: Annotated[float, Field(ge=0, le=1e5)] = 1.0  # CUDA context, NCCL
    # a measured operator table: a built-in name (catalog/operator_tables/<name>.csv) or a
    # .csv file (relative to the file that sets it). GEMMs of the shapes and dtypes it
    # measured are priced from it, the rest by the roofline above (docs/cost_model.md §5b);
    # None: roofline only
    operator_table: str | None = None

    @field_validator("peak_tflops")
    @classmethod
    def _has_a_16_bit_peak(cls, peaks: dict[str, float]) -> dict[str, float]:
        if "bf16" not in peaks and "fp16" not in peaks:
            # the LM head and every narrower dtype without its own peak run at 16 bits
            raise ValueError("a peak for bf16 or fp16 (e.g. {bf16: 989}), TFLOP/s")
        return peaks

    @field_validator("operator_table")
    @classmethod
    def _known_table(cls, name: str | None) -> str | None:
        if name is None:
            return name
        # the catalog is looked up by name, as config/references.py looks up built-ins; a
        # path is made absolute and read by config/load.py
        tables = importlib.import_module("clustersim.catalog.operator_tables")
        if not tables.is_table_path(name) and name not in tables.table_names():
            names = ", ".join(tables.table_names())
            raise ValueError(f"a built-in operator table ({names}), a .csv file path or null")
        return name

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_when(handler(self), operator_table=None)
