"""One GPU's peaks and calibrated efficiencies (`hardware:`)."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import SerializerFunctionWrapHandler, field_validator, model_serializer

from clustersim.config.schema.base import (
    DType,
    Fraction,
    NonNegFloat,
    PosFloat,
    PosInt,
    Strict,
    omit_when,
)


class HardwareSpec(Strict):
    """One GPU: published peaks plus calibrated efficiencies (see docs/calibration.md).

    `peak_tflops` are dense (non-sparse) figures per dtype; a dtype missing from the map is not
    supported by the tensor cores and falls back to the next wider one.
    """

    name: str
    memory_GiB: PosFloat  # usable device memory as the driver reports it
    hbm_bandwidth_GBps: PosFloat
    peak_tflops: dict[DType, PosFloat]
    sm_count: PosInt = 132  # streaming multiprocessors (data sheet)
    nvls: bool = False  # NVSwitch with NVLink SHARP (in-switch all-reduce): Hopper and later
    nvlink_bandwidth_GBps: NonNegFloat = 0.0  # per direction per GPU; 0 = no NVLink
    pcie_bandwidth_GBps: PosFloat = 64.0  # per direction (Gen5 x16 ≈ 64)
    matmul_efficiency: Fraction = 0.7  # achieved / peak on large GEMMs
    # GEMM rows (tokens) at which matmul efficiency is half of matmul_efficiency:
    # eff(M) = matmul_efficiency · M / (M + matmul_half_tokens)
    matmul_half_tokens: NonNegFloat = 16.0
    attention_efficiency: Fraction = 0.5  # achieved / peak for prefill attention FLOPs
    hbm_efficiency: Fraction = 0.8  # achieved / peak HBM bandwidth on streaming reads
    # achieved / peak HBM bandwidth of MoE grouped GEMMs streaming expert weights
    grouped_gemm_hbm_efficiency: Fraction = 0.8
    # achieved / peak HBM bandwidth of the decode-attention KV read (None = hbm_efficiency)
    decode_attention_efficiency: Fraction | None = None
    # fixed GPU time per decoding sequence per layer, beyond its KV read (paged-KV append,
    # block-table walk, Q / output handling of the generation attention path)
    decode_seq_overhead_us: NonNegFloat = 0.0
    # GPU-side fixed time per engine step outside the layers' kernels: input copies, graph
    # replay start, the sampling tail (host time is the engine profile's, catalog/engines.py)
    step_overhead_us: NonNegFloat = 30.0
    # least GPU time of one kernel, back to back in a stream or graph (launch gap, prologue,
    # one wave, tail): a layer's kernel costs max(roofline, this) (docs/cost_model.md §6)
    kernel_floor_us: NonNegFloat = 3.0
    # FlashMLA-style absorbed MLA decode attention: achieved / peak tensor-core rate (its FLOPs
    # per KV byte are high enough that decode attention can be compute-bound)
    mla_decode_efficiency: Fraction = 0.6
    reserved_memory_GiB: NonNegFloat = 1.0  # CUDA context, NCCL buffers: never usable
    # a measured operator table: a built-in name (catalog/operator_tables/<name>.csv) or a
    # .csv file (relative to the file that sets it). GEMMs of the shapes and dtypes it
    # measured are priced from it, the rest by the roofline above (docs/cost_model.md §5b);
    # None: roofline only
    operator_table: str | None = None

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
