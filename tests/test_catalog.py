"""Built-in model / hardware catalog and the HuggingFace config.json loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clustersim.catalog.hardware import get_hardware, hardware_names
from clustersim.catalog.models import get_model, load_hf_config, model_names
from clustersim.config.schema import ModelSpec

MODELS = [
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "llama-2-70b",
    "mixtral-8x7b",
    "qwen3-235b-a22b",
    "deepseek-v3",
]
GPUS = ["a100-80gb", "h100-sxm", "h200", "h800", "b200", "gb200", "l40s"]


def test_names_listed() -> None:
    assert set(MODELS) <= set(model_names())
    assert set(GPUS) <= set(hardware_names())
    for n in MODELS:
        assert get_model(n).name == n and get_model(n).hf_id
    for n in GPUS:
        assert get_hardware(n).name == n


def test_unknown_names_list_known() -> None:
    with pytest.raises(KeyError, match=r"llama-3\.1-70b"):
        get_model("llama-9")
    with pytest.raises(KeyError, match="h100-sxm"):
        get_hardware("tpu-v5")


def test_deepseek_v3_fields() -> None:
    m = get_model("deepseek-v3")
    assert (m.num_layers, m.first_dense_layers, m.num_moe_layers) == (61, 3, 58)
    assert (m.num_experts, m.experts_per_token, m.num_shared_experts) == (256, 8, 1)
    assert (m.moe_intermediate_size, m.intermediate_size) == (2048, 18432)
    assert (m.kv_lora_rank, m.q_lora_rank, m.qk_rope_head_dim) == (512, 1536, 64)
    assert (m.qk_nope_head_dim, m.v_head_dim, m.num_attention_heads) == (128, 128, 128)
    assert (m.hidden_size, m.vocab_size) == (7168, 129280)
    assert m.uses_mla and m.is_moe


def test_hardware_facts() -> None:
    h100 = get_hardware("h100-sxm")
    assert h100.memory_GiB == pytest.approx(79.65, abs=0.01)
    assert h100.peak_tflops["fp8"] == 1979 and h100.peak_tflops["bf16"] == 989
    assert h100.hbm_bandwidth_GBps == 3350
    nvlink = {n: get_hardware(n).nvlink_bandwidth_GBps for n in GPUS}
    assert nvlink == {
        "a100-80gb": 300,
        "h100-sxm": 450,
        "h200": 450,
        "h800": 200,
        "b200": 900,
        "gb200": 900,
        "l40s": 0,
    }
    assert "fp8" not in get_hardware("a100-80gb").peak_tflops
    l40s = get_hardware("l40s")
    assert l40s.hbm_bandwidth_GBps == 864 and 44 < l40s.memory_GiB < 48
    assert l40s.peak_tflops["fp8"] == 733 and l40s.peak_tflops["bf16"] == pytest.approx(362, abs=1)
    assert get_hardware("b200").peak_tflops["fp4"] == 9000
    for n in GPUS:
        hw = get_hardware(n)
        assert 0 < hw.matmul_efficiency <= 1 and 0 < hw.hbm_efficiency <= 1


# --------------------------------------------------------------------------- HF loader


def _hf_config(m: ModelSpec) -> dict[str, Any]:
    """A config.json as HuggingFace publishes it for the model's family."""
    cfg: dict[str, Any] = {
        "_name_or_path": m.hf_id,
        "num_hidden_layers": m.num_layers,
        "hidden_size": m.hidden_size,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_kv_heads,
        "intermediate_size": m.intermediate_size,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_context,
        "tie_word_embeddings": m.tie_word_embeddings,
        "rms_norm_eps": 1e-5,
    }
    if m.uses_mla:  # deepseek_v3: no head_dim field, MoE under n_routed_experts
        cfg |= {
            "model_type": "deepseek_v3",
            "n_routed_experts": m.num_experts,
            "n_shared_experts": m.num_shared_experts,
            "num_experts_per_tok": m.experts_per_token,
            "moe_intermediate_size": m.moe_intermediate_size,
            "first_k_dense_replace": m.first_dense_layers,
            "kv_lora_rank": m.kv_lora_rank,
            "q_lora_rank": m.q_lora_rank,
            "qk_rope_head_dim": m.qk_rope_head_dim,
            "qk_nope_head_dim": m.qk_nope_head_dim,
            "v_head_dim": m.v_head_dim,
            "num_nextn_predict_layers": m.num_nextn_predict_layers,  # the MTP module
        }
    elif m.is_moe and m.moe_intermediate_size == m.intermediate_size:  # mixtral
        cfg |= {
            "model_type": "mixtral",
            "num_local_experts": m.num_experts,
            "num_experts_per_tok": m.experts_per_token,
        }
    elif m.is_moe:  # qwen3_moe
        cfg |= {
            "model_type": "qwen3_moe",
            "head_dim": m.head_dim,
            "num_experts": m.num_experts,
            "num_experts_per_tok": m.experts_per_token,
            "moe_intermediate_size": m.moe_intermediate_size,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        }
    else:  # llama: head_dim implied by hidden / heads
        cfg |= {"model_type": "llama"}
    return cfg


@pytest.mark.parametrize("name", MODELS)
def test_hf_config_round_trip(name: str, tmp_path: Path) -> None:
    m = get_model(name)
    path = tmp_path / name / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_hf_config(m)))
    loaded = load_hf_config(path)
    assert loaded == m  # name comes from the directory, hf_id from _name_or_path


def test_hf_config_missing_field_named(tmp_path: Path) -> None:
    cfg = _hf_config(get_model("llama-3.1-8b"))
    del cfg["num_hidden_layers"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        load_hf_config(path)
    cfg = _hf_config(get_model("mixtral-8x7b"))
    del cfg["num_experts_per_tok"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        load_hf_config(path)


def test_hf_config_variants(tmp_path: Path) -> None:
    base = _hf_config(get_model("qwen3-235b-a22b"))
    path = tmp_path / "qwen.json"
    # qwen2_moe style shared expert, leading dense layers via mlp_only_layers
    cfg = base | {"shared_expert_intermediate_size": 4 * 1536, "mlp_only_layers": [0, 1]}
    path.write_text(json.dumps(cfg))
    m = load_hf_config(path, name="q")
    assert (m.name, m.num_shared_experts, m.first_dense_layers) == ("q", 4, 2)
    path.write_text(json.dumps(base | {"decoder_sparse_step": 2}))
    with pytest.raises(ValueError, match="decoder_sparse_step"):
        load_hf_config(path)
    # num_key_value_heads absent means multi-head attention; null num_experts means dense
    cfg = _hf_config(get_model("llama-2-70b"))
    del cfg["num_key_value_heads"]
    path.write_text(json.dumps(cfg | {"num_experts": None}))
    m = load_hf_config(path)
    assert m.num_kv_heads == m.num_attention_heads == 64 and not m.is_moe
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_hf_config(path)
