"""Shared building blocks of the schema: the strict base model, bounded number types, dtypes
and the keyed cross-field error."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

DType = Literal["bf16", "fp16", "fp8", "fp4"]
DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp4": 0.5}

# Counts (layers, tokens, sequences, GPUs, requests) above MAX_COUNT are typos, not inputs: they
# would overflow int64 arrays downstream. Seeds are the exception (any 64-bit value).
MAX_COUNT = 2**31 - 1
MAX_NAME_CHARS = 255  # an experiment's name becomes a directory name
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
# Physical ranges, generous by orders of magnitude: a value outside one is a typo (a unit slip,
# an exponent), and would make a step or a transfer outlast any horizon.
BandwidthGBps = Annotated[float, Field(ge=0.1, le=1e6)]  # a link's or memory's GB/s
Micros = Annotated[float, Field(ge=0, le=1e6)]  # a fixed cost or latency, µs


def keyed_error(key: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at `key` (dotted, relative to the model that raises it),
    so the one-line message names the key path, not just the section."""
    return PydanticCustomError(
        "keyed_value_error", message.replace("{", "(").replace("}", ")"), {"key": key}
    )


def omit_when(data: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """`data` without the keys whose value equals the given default: fields added after the
    result formats were pinned stay out of the resolved configs that do not use them."""
    for key, default in defaults.items():
        if key in data and data[key] == default:
            del data[key]
    return data


class Strict(BaseModel):
    """Base: unknown keys rejected, instances immutable, numbers finite (no inf / NaN), strict
    types (no `true` → 1, no `'7'` → 7; an int is accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
