"""The transformer architecture of an experiment (`model:`)."""

from typing import Any

from pydantic import SerializerFunctionWrapHandler, model_serializer, model_validator

from clustersim.config.schema.base import NonNegInt, PosInt, Strict, omit_when


class ModelSpec(Strict):
    """Transformer architecture, HuggingFace-config compatible field meanings.

    Dense layers use `intermediate_size`; MoE layers use `num_experts` routed experts of
    `moe_intermediate_size` each (top `experts_per_token`) plus `num_shared_experts` shared
    experts of the same size. The first `first_dense_layers` layers are dense.
    MLA (DeepSeek) is on when `kv_lora_rank > 0`: the KV cache per token per layer is
    (kv_lora_rank + qk_rope_head_dim) elements instead of 2 × num_kv_heads × head_dim.
    """

    name: str
    hf_id: str = ""
    num_layers: PosInt
    hidden_size: PosInt
    num_attention_heads: PosInt
    num_kv_heads: PosInt
    head_dim: PosInt
    intermediate_size: PosInt
    vocab_size: PosInt
    tie_word_embeddings: bool = False
    max_context: PosInt = 131072
    # MoE
    num_experts: NonNegInt = 0
    experts_per_token: NonNegInt = 0
    num_shared_experts: NonNegInt = 0
    moe_intermediate_size: NonNegInt = 0
    first_dense_layers: NonNegInt = 0
    # MLA
    q_lora_rank: NonNegInt = 0
    kv_lora_rank: NonNegInt = 0
    qk_rope_head_dim: NonNegInt = 0
    qk_nope_head_dim: NonNegInt = 0
    v_head_dim: NonNegInt = 0
    # multi-token prediction modules (DeepSeek-V3 `num_nextn_predict_layers`): decoder layers
    # of the model's shape after the last one, each predicting one more token (MTP drafting)
    num_nextn_predict_layers: NonNegInt = 0

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return omit_when(handler(self), num_nextn_predict_layers=0)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @model_validator(mode="after")
    def _check_moe_and_heads(self) -> "ModelSpec":
        if self.num_attention_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.is_moe:
            if not 0 < self.experts_per_token <= self.num_experts:
                raise ValueError(
                    f"experts_per_token must be in 1..num_experts ({self.num_experts}), "
                    f"got {self.experts_per_token}"
                )
            if self.moe_intermediate_size <= 0:
                raise ValueError("an MoE model needs moe_intermediate_size > 0")
            if self.first_dense_layers >= self.num_layers:
                raise ValueError("first_dense_layers must be below num_layers")
        return self
