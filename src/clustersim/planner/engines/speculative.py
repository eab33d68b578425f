"""`serving.speculative` as each engine's launch options (docs/speculative.md).

- vLLM: --speculative-config JSON (vllm.config.SpeculativeConfig): `method` deepseek_mtp
  (the model's own MTP layers), eagle / eagle3 (an EAGLE / EAGLE-3 head, `model` its
  checkpoint: catalog/eagle_heads.py or serving.speculative.draft_model) or draft_model
  (`model` the draft checkpoint), `num_speculative_tokens` k.
- SGLang: --speculative-algorithm EAGLE (also how SGLang runs DeepSeek's MTP module, which it
  loads from the target checkpoint or a NextN export), EAGLE3 (an EAGLE-3 head) or
  STANDALONE (a separate draft
  model), chain drafting as simulated: --speculative-num-steps k, --speculative-eagle-topk 1,
  --speculative-num-draft-tokens k + 1; --speculative-draft-model-path for EAGLE heads and
  draft models.
- TensorRT-LLM: `speculative_config` in the extra_llm_api_options YAML: decoding_type MTP with
  num_nextn_predict_layers k, Eagle with max_draft_len k and speculative_model_dir, or
  DraftTarget with max_draft_len k and speculative_model_dir.

Acceptance rates are a property of the model pair and the traffic, not a launch option: the
notes say which were simulated so a benchmark can be compared with them.
"""

from __future__ import annotations

import json

from clustersim.catalog.eagle_heads import eagle_head
from clustersim.catalog.models import get_model
from clustersim.config.schema import Experiment, SpeculativeSpec


def _draft_path(exp: Experiment) -> str:
    """The drafter checkpoint an engine loads for eagle (the head, catalog/eagle_heads.py) or
    draft_model (the catalog model's HF id)."""
    spec = exp.serving.speculative
    assert spec is not None
    if spec.method == "draft_model" and spec.draft_model is not None:
        draft = get_model(spec.draft_model)
        return draft.hf_id or draft.name
    return eagle_head(exp.model, spec.draft_model).hf_id


def _eagle3(exp: Experiment) -> bool:
    spec = exp.serving.speculative
    return (
        spec is not None
        and spec.method == "eagle"
        and eagle_head(exp.model, spec.draft_model).eagle3
    )


def acceptance_note(spec: SpeculativeSpec) -> str:
    rates = ", ".join(f"{p:g}" for p in spec.rates)
    return (
        f"speculative {spec.method}, k = {spec.num_tokens}: simulated with conditional "
        f"acceptance [{rates}] per draft position — measure the engine's own acceptance "
        "(its spec-decode metrics) on your traffic before trusting the TPOT"
    )


def _eagle_note(exp: Experiment) -> list[str]:
    spec = exp.serving.speculative
    if spec is None or spec.method != "eagle":
        return []
    head = eagle_head(exp.model, spec.draft_model)
    target = exp.model.hf_id or exp.model.name
    if head.trained_for == target:
        return []
    return [
        f"EAGLE head {head.hf_id} was trained for {head.trained_for}, served here with "
        f"{target} (same architecture): measure its acceptance before trusting the TPOT"
    ]


def vllm_speculative(exp: Experiment) -> tuple[list[str], list[str]]:
    """vLLM flags and notes for serving.speculative ([] when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return [], []
    cfg: dict[str, object] = {}
    if spec.method == "mtp":
        cfg["method"] = "deepseek_mtp"
    else:
        cfg["method"] = "eagle3" if _eagle3(exp) else spec.method
        cfg["model"] = _draft_path(exp)
    cfg["num_speculative_tokens"] = spec.num_tokens
    notes = [acceptance_note(spec), *_eagle_note(exp)]
    if exp.layout.pp > 1:
        notes.append("vLLM documents speculative decoding as not compatible with PP > 1")
    return ["--speculative-config", json.dumps(cfg)], notes


def sglang_speculative(exp: Experiment) -> tuple[list[str], list[str]]:
    """SGLang flags and notes for serving.speculative ([] when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return [], []
    k = spec.num_tokens
    algorithm = "STANDALONE" if spec.method == "draft_model" else "EAGLE"
    argv = ["--speculative-algorithm", "EAGLE3" if _eagle3(exp) else algorithm]
    if spec.method != "mtp":
        argv += ["--speculative-draft-model-path", _draft_path(exp)]
    argv += ["--speculative-num-steps", str(k), "--speculative-eagle-topk", "1"]
    argv += ["--speculative-num-draft-tokens", str(k + 1)]
    return argv, [acceptance_note(spec), *_eagle_note(exp)]


def trtllm_speculative(exp: Experiment) -> tuple[dict[str, object] | None, list[str]]:
    """TensorRT-LLM's `speculative_config` mapping and notes (None when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return None, []
    if spec.method == "mtp":
        cfg: dict[str, object] = {
            "decoding_type": "MTP",
            "num_nextn_predict_layers": spec.num_tokens,
        }
    else:
        kind = "Eagle" if spec.method == "eagle" else "DraftTarget"
        cfg = {
            "decoding_type": kind,
            "max_draft_len": spec.num_tokens,
            "speculative_model_dir": _draft_path(exp),
        }
    return cfg, [acceptance_note(spec), *_eagle_note(exp)]
