"""Built-in model architectures (published HuggingFace config.json values) and a loader for
any HuggingFace config.json of the llama / mistral / mixtral / qwen2 / qwen3 / qwen2_moe /
qwen3_moe / deepseek_v2 / deepseek_v3 families.

Field meanings follow `ModelSpec` (config/schema.py). For MLA models (DeepSeek) `head_dim` is
the query/key head dimension qk_nope_head_dim + qk_rope_head_dim (192 for DeepSeek-V3); the
KV cache is sized from kv_lora_rank + qk_rope_head_dim instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clustersim.config.schema import MAX_COUNT, ModelSpec

_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="llama-3.1-8b",
        hf_id="meta-llama/Llama-3.1-8B",
        num_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=14336,
        vocab_size=128256,
        max_context=131072,
    ),
    ModelSpec(
        name="llama-3.1-70b",
        hf_id="meta-llama/Llama-3.1-70B",
        num_layers=80,
        hidden_size=8192,
        num_attention_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=28672,
        vocab_size=128256,
        max_context=131072,
    ),
    ModelSpec(
        name="llama-3.1-405b",
        hf_id="meta-llama/Llama-3.1-405B",
        num_layers=126,
        hidden_size=16384,
        num_attention_heads=128,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=53248,
        vocab_size=128256,
        max_context=131072,
    ),
    ModelSpec(
        name="llama-2-70b",
        hf_id="meta-llama/Llama-2-70b-hf",
        num_layers=80,
        hidden_size=8192,
        num_attention_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=28672,
        vocab_size=32000,
        max_context=4096,
    ),
    ModelSpec(
        name="mixtral-8x7b",
        hf_id="mistralai/Mixtral-8x7B-v0.1",
        num_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=14336,  # HF `intermediate_size` is the expert size for mixtral
        vocab_size=32000,
        max_context=32768,
        num_experts=8,
        experts_per_token=2,
        moe_intermediate_size=14336,
    ),
    ModelSpec(
        name="qwen3-235b-a22b",
        hf_id="Qwen/Qwen3-235B-A22B",
        num_layers=94,
        hidden_size=4096,
        num_attention_heads=64,
        num_kv_heads=4,
        head_dim=128,
        intermediate_size=12288,  # unused: every layer is MoE (decoder_sparse_step 1)
        vocab_size=151936,
        max_context=40960,
        num_experts=128,
        experts_per_token=8,
        moe_intermediate_size=1536,
    ),
    ModelSpec(
        name="deepseek-v3",
        hf_id="deepseek-ai/DeepSeek-V3",
        num_layers=61,
        hidden_size=7168,
        num_attention_heads=128,
        num_kv_heads=128,
        head_dim=192,  # qk_nope_head_dim + qk_rope_head_dim
        intermediate_size=18432,  # the 3 dense layers
        vocab_size=129280,
        max_context=163840,
        num_experts=256,
        experts_per_token=8,
        num_shared_experts=1,
        moe_intermediate_size=2048,
        first_dense_layers=3,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
        qk_nope_head_dim=128,
        v_head_dim=128,
        num_nextn_predict_layers=1,  # the MTP module (DeepSeek-V3 tech report §2.2)
    ),
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in _MODELS}


def model_names() -> list[str]:
    """Names of the built-in models, sorted."""
    return sorted(MODELS)


def get_model(name: str) -> ModelSpec:
    """The built-in model `name`; KeyError listing the known names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(model_names())}") from None


# --------------------------------------------------------------------------- HF config loader


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    """Value of the first key present with a non-null value, else None."""
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return None


class HFConfigError(ValueError):
    """A config.json field that cannot describe a model: names the file and the field."""

    def __init__(self, where: str, key: str, problem: str) -> None:
        self.where = where
        self.key = key
        self.problem = problem
        super().__init__(": ".join(filter(None, [where, key, problem])))

    def __reduce__(self) -> tuple[type[HFConfigError], tuple[str, str, str]]:
        return (HFConfigError, (self.where, self.key, self.problem))


def _require_int(cfg: Mapping[str, Any], where: str, *keys: str) -> int:
    v = _first(cfg, *keys)
    if v is None:
        aliases = f" (or {', '.join(keys[1:])})" if len(keys) > 1 else ""
        raise HFConfigError(where, keys[0], f"missing required field{aliases}")
    return _as_int(v, where, keys[0])


def _as_int(v: Any, where: str, key: str) -> int:
    """A whole number in [0, MAX_COUNT] (JSON floats such as 1e400 = inf or NaN refused)."""
    ok = not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))
    )  # (an int beyond a float's range is refused by the range check below, not converted)
    if not ok or int(v) != v:
        raise HFConfigError(where, key, f"expected a whole number (got {v!r})")
    if not 0 <= v <= MAX_COUNT:
        raise HFConfigError(where, key, f"expected a number from 0 to {MAX_COUNT} (got {v!r})")
    return int(v)


def _opt_int(cfg: Mapping[str, Any], where: str, *keys: str, default: int = 0) -> int:
    v = _first(cfg, *keys)
    return default if v is None else _as_int(v, where, keys[0])


def _first_dense_layers(cfg: Mapping[str, Any], where: str, num_layers: int) -> int:
    """Leading dense layers: deepseek `first_k_dense_replace`, qwen `mlp_only_layers`."""
    if cfg.get("first_k_dense_replace") is not None:
        return _as_int(cfg["first_k_dense_replace"], where, "first_k_dense_replace")
    step = _opt_int(cfg, where, "decoder_sparse_step", default=1)
    if step != 1:
        raise HFConfigError(
            where, "decoder_sparse_step", f"{step} (interleaved MoE) is not supported"
        )
    raw = cfg.get("mlp_only_layers") or []
    if not isinstance(raw, list):
        raise HFConfigError(
            where, "mlp_only_layers", f"expected a list of layer indices (got {raw!r})"
        )
    dense = sorted(_as_int(i, where, "mlp_only_layers") for i in raw)
    if dense != list(range(len(dense))):
        raise HFConfigError(where, "mlp_only_layers", f"expected the leading layers (got {dense})")
    return min(len(dense), num_layers)


def _moe_fields(cfg: Mapping[str, Any], where: str, num_layers: int) -> dict[str, int]:
    experts = _opt_int(cfg, where, "num_local_experts", "num_experts", "n_routed_experts")
    if experts <= 0:
        return {}
    expert_size = _require_int(cfg, where, "moe_intermediate_size", "intermediate_size")
    if expert_size <= 0:
        raise HFConfigError(where, "moe_intermediate_size", "expected a number > 0 (got 0)")
    shared = _opt_int(cfg, where, "n_shared_experts", "num_shared_experts")
    shared_size = _opt_int(cfg, where, "shared_expert_intermediate_size")
    if shared == 0 and shared_size > 0:
        # qwen2_moe: one shared expert of its own width, counted in units of expert_size
        shared = max(1, round(shared_size / expert_size))
    return {
        "num_experts": experts,
        "experts_per_token": _require_int(cfg, where, "num_experts_per_tok"),
        "num_shared_experts": shared,
        "moe_intermediate_size": expert_size,
        "first_dense_layers": _first_dense_layers(cfg, where, num_layers),
    }


def _mla_fields(cfg: Mapping[str, Any], where: str) -> dict[str, int]:
    kv_lora = _opt_int(cfg, where, "kv_lora_rank")
    if kv_lora <= 0:
        return {}
    return {
        "kv_lora_rank": kv_lora,
        "q_lora_rank": _opt_int(cfg, where, "q_lora_rank"),
        "qk_rope_head_dim": _require_int(cfg, where, "qk_rope_head_dim"),
        "qk_nope_head_dim": _require_int(cfg, where, "qk_nope_head_dim"),
        "v_head_dim": _require_int(cfg, where, "v_head_dim"),
    }


def model_from_hf_dict(cfg: Mapping[str, Any], name: str, where: str = "config.json") -> ModelSpec:
    """Map a parsed HuggingFace config.json to a ModelSpec (ValueError names a missing field)."""
    layers = _require_int(cfg, where, "num_hidden_layers")
    hidden = _require_int(cfg, where, "hidden_size")
    heads = _require_int(cfg, where, "num_attention_heads")
    if heads == 0:
        raise HFConfigError(
            where, "num_attention_heads", "expected a number greater than 0 (got 0)"
        )
    moe = _moe_fields(cfg, where, layers)
    mla = _mla_fields(cfg, where)
    if mla:
        head_dim = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
    else:
        head_dim = _opt_int(cfg, where, "head_dim", default=hidden // heads)
    if moe and cfg.get("intermediate_size") is None:
        intermediate = moe["moe_intermediate_size"]
    else:
        intermediate = _require_int(cfg, where, "intermediate_size")
    name_or_path = cfg.get("_name_or_path")
    try:
        return ModelSpec(
            name=name,
            hf_id=name_or_path if isinstance(name_or_path, str) else "",
            num_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_kv_heads=_opt_int(cfg, where, "num_key_value_heads", default=heads),
            head_dim=head_dim,
            intermediate_size=intermediate,
            vocab_size=_require_int(cfg, where, "vocab_size"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_context=_opt_int(cfg, where, "max_position_embeddings", default=131072),
            num_nextn_predict_layers=_opt_int(cfg, where, "num_nextn_predict_layers"),
            **moe,
            **mla,
        )
    except ValidationError:
        raise  # the loader words it (key path, no pydantic boilerplate)


def load_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a HuggingFace config.json. `name` defaults to the containing directory's name
    (the usual layout is <model>/config.json), or the file stem when that is not informative."""
    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: cannot read a JSON config: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: expected a JSON object")
    if isinstance(cfg.get("text_config"), dict) and "num_hidden_layers" not in cfg:
        cfg = {**cfg["text_config"], "_name_or_path": cfg.get("_name_or_path")}
    if name is None:
        name = p.parent.name if p.stem == "config" and p.parent.name else p.stem
    return model_from_hf_dict(cfg, name=name, where=str(p))
