"""`serving.speculative` as each engine's launch options (docs/speculative.md).

- vLLM: --speculative-config JSON (vllm.config.SpeculativeConfig): `method` deepseek_mtp
  (the model's own MTP layers), eagle (an EAGLE head, `model` its checkpoint) or draft_model
  (`model` the draft checkpoint), `num_speculative_tokens` k.
- SGLang: --speculative-algorithm EAGLE (also how SGLang runs DeepSeek's MTP module, which it
  loads from the target checkpoint or a NextN export) or STANDALONE (a separate draft
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

from clustersim.catalog.models import get_model
from clustersim.config.schema import Experiment, SpeculativeSpec

EAGLE_HEAD = "<EAGLE head checkpoint for {model}>"  # no catalog of EAGLE heads: fill it in


def _draft_path(spec: SpeculativeSpec, target: str) -> str:
    """The drafter checkpoint an engine loads for eagle / draft_model."""
    if spec.method == "draft_model" and spec.draft_model is not None:
        draft = get_model(spec.draft_model)
        return draft.hf_id or draft.name
    return EAGLE_HEAD.format(model=target)


def acceptance_note(spec: SpeculativeSpec) -> str:
    rates = ", ".join(f"{p:g}" for p in spec.rates)
    return (
        f"speculative {spec.method}, k = {spec.num_tokens}: simulated with conditional "
        f"acceptance [{rates}] per draft position — measure the engine's own acceptance "
        "(its spec-decode metrics) on your traffic before trusting the TPOT"
    )


def _eagle_note(spec: SpeculativeSpec, target: str) -> list[str]:
    if spec.method != "eagle":
        return []
    return [f"replace {EAGLE_HEAD.format(model=target)} with an EAGLE head trained for {target}"]


def vllm_speculative(exp: Experiment) -> tuple[list[str], list[str]]:
    """vLLM flags and notes for serving.speculative ([] when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return [], []
    target = exp.model.hf_id or exp.model.name
    cfg: dict[str, object] = {}
    if spec.method == "mtp":
        cfg["method"] = "deepseek_mtp"
    else:
        cfg["method"] = spec.method
        cfg["model"] = _draft_path(spec, target)
    cfg["num_speculative_tokens"] = spec.num_tokens
    notes = [acceptance_note(spec), *_eagle_note(spec, target)]
    if exp.layout.pp > 1:
        notes.append("vLLM documents speculative decoding as not compatible with PP > 1")
    return ["--speculative-config", json.dumps(cfg)], notes


def sglang_speculative(exp: Experiment) -> tuple[list[str], list[str]]:
    """SGLang flags and notes for serving.speculative ([] when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return [], []
    target = exp.model.hf_id or exp.model.name
    k = spec.num_tokens
    algorithm = "STANDALONE" if spec.method == "draft_model" else "EAGLE"
    argv = ["--speculative-algorithm", algorithm]
    if spec.method != "mtp":
        argv += ["--speculative-draft-model-path", _draft_path(spec, target)]
    argv += ["--speculative-num-steps", str(k), "--speculative-eagle-topk", "1"]
    argv += ["--speculative-num-draft-tokens", str(k + 1)]
    return argv, [acceptance_note(spec), *_eagle_note(spec, target)]


def trtllm_speculative(exp: Experiment) -> tuple[dict[str, object] | None, list[str]]:
    """TensorRT-LLM's `speculative_config` mapping and notes (None when unset)."""
    spec = exp.serving.speculative
    if spec is None:
        return None, []
    target = exp.model.hf_id or exp.model.name
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
            "speculative_model_dir": _draft_path(spec, target),
        }
    return cfg, [acceptance_note(spec), *_eagle_note(spec, target)]
