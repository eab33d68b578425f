"""Published EAGLE / EAGLE-3 draft heads for the built-in models (docs/speculative.md).

An EAGLE head is one decoder layer of its target's shape that drafts from the target's hidden
states (EAGLE, arXiv:2401.15077; EAGLE-3, arXiv:2503.01840). EAGLE(-2) heads share the
target's embedding and LM head; EAGLE-3 heads keep the embedding but carry their own LM head
over a reduced draft vocabulary (`draft_vocab_size` in the head's config.json) — the part of a
draft pass that differs most from "one layer of the target's shape with its head".

Only heads whose Hugging Face id and config.json were checked are listed, each with where:
- yuhuili/EAGLE3-LLaMA3.1-Instruct-8B: listed on huggingface.co/yuhuili; config.json
  (as copied unchanged but for `architectures` in jamesliu1/sglang-EAGLE3-Llama-3.1-Instruct-8B):
  1 layer, hidden 4096, intermediate 14336, 32 heads / 8 KV heads, vocab 128256,
  draft_vocab_size 32000.
- yuhuili/EAGLE3-LLaMA3.3-Instruct-70B: listed on huggingface.co/yuhuili, used in vLLM's and
  TensorRT-LLM's EAGLE-3 examples; trained for Llama-3.3-70B-Instruct, whose architecture is
  Llama-3.1-70B's (80 layers, hidden 8192, 64 / 8 heads, vocab 128256); one layer of that
  shape with EAGLE-3's 32000-token draft vocabulary.
- yuhuili/EAGLE-llama2-chat-70B: listed on huggingface.co/yuhuili (EAGLE-1 release); EAGLE-1
  heads are one layer of the target's shape sharing its head (the 7B / 13B heads' config.json:
  the target's hidden / intermediate sizes, num_hidden_layers 1, vocab 32000).

Models without a listed head (mixtral-8x7b, qwen3-235b-a22b, deepseek-v3 — which has its own
MTP module, method mtp) need `serving.speculative.draft_model: <head checkpoint>` with method
eagle; that head is then priced as an EAGLE-1 head (one layer of the target's shape, sharing
the target's LM head).
"""

from __future__ import annotations

from dataclasses import dataclass

from clustersim.catalog.models import MODELS
from clustersim.config.schema import ModelSpec


@dataclass(frozen=True)
class EagleHead:
    """A published EAGLE head: its checkpoint and the shape of one draft pass."""

    hf_id: str  # the checkpoint engines load (--speculative-draft-model-path / "model")
    trained_for: str  # the HF id of the model it was trained on
    eagle3: bool  # EAGLE-3 (vLLM method "eagle3", SGLang algorithm EAGLE3)
    num_layers: int  # decoder layers of the target's shape
    draft_vocab: int | None  # EAGLE-3: its own LM head's vocabulary; None: the target's head


EAGLE_HEADS: dict[str, EagleHead] = {
    "llama-3.1-8b": EagleHead(
        "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
        "meta-llama/Llama-3.1-8B-Instruct",
        eagle3=True,
        num_layers=1,
        draft_vocab=32000,
    ),
    "llama-3.1-70b": EagleHead(
        "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
        "meta-llama/Llama-3.3-70B-Instruct",
        eagle3=True,
        num_layers=1,
        draft_vocab=32000,
    ),
    "llama-2-70b": EagleHead(
        "yuhuili/EAGLE-llama2-chat-70B",
        "meta-llama/Llama-2-70b-chat-hf",
        eagle3=False,
        num_layers=1,
        draft_vocab=None,
    ),
}


def eagle_head_for(model: ModelSpec) -> EagleHead | None:
    """The catalog's head for `model` (by built-in name or HF id); None when none is listed."""
    found = EAGLE_HEADS.get(model.name)
    if found is not None:
        return found
    for name, head in EAGLE_HEADS.items():
        if model.hf_id is not None and model.hf_id == MODELS[name].hf_id:
            return head
    return None


def eagle_head(model: ModelSpec, checkpoint: str | None) -> EagleHead:
    """The head method eagle drafts with: the user's `checkpoint` (a listed head keeps its
    shape; any other is priced as an EAGLE-1 head), else the catalog's; ValueError when
    neither exists."""
    listed = eagle_head_for(model)
    if checkpoint is None:
        if listed is None:
            raise ValueError(missing_head_message(model))
        return listed
    for head in EAGLE_HEADS.values():
        if head.hf_id == checkpoint:
            return head
    return EagleHead(checkpoint, model.hf_id or model.name, False, 1, None)


def missing_head_message(model: ModelSpec) -> str:
    listed = ", ".join(f"{name} ({h.hf_id})" for name, h in EAGLE_HEADS.items())
    return (
        f"no published EAGLE head for model {model.name} in the catalog (heads: {listed}); "
        "give the checkpoint of an EAGLE head trained for it "
        "(serving.speculative.draft_model: <HF id or path>)"
    )
