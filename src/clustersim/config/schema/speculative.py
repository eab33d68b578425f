"""`serving.speculative`: speculative decoding / multi-token prediction (docs/speculative.md).

A decode step verifies k = `num_tokens` draft tokens per sequence with the target model;
draft token i is accepted with conditional probability p_i (given drafts 1 … i − 1 were),
listed in `acceptance`, or one rate for every position. The drafter is the model's own MTP
layers (`mtp`, DeepSeek-V3), an EAGLE head (`eagle`: the catalog's published head for the
model, catalog/eagle_heads.py, or the checkpoint named in `draft_model`), or a separate small
model (`draft_model`, named from the built-in catalog).
"""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from clustersim.config.schema.base import Strict, keyed_error

AcceptanceRate = float  # in (0, 1], checked by SpeculativeSpec
MAX_DRAFT_TOKENS = 16  # beyond this no engine proposes (vLLM / SGLang configs use 1 … 8)


class SpeculativeSpec(Strict):
    method: Literal["mtp", "eagle", "draft_model"]
    # k, draft tokens verified per step (PosInt's own bound would override a Field(le=...))
    num_tokens: Annotated[int, Field(gt=0, le=MAX_DRAFT_TOKENS)]
    # one rate a (every position), or [p_1 … p_k]: P(draft i accepted | drafts < i were)
    acceptance: AcceptanceRate | list[AcceptanceRate]
    # method draft_model: a built-in model's name (required); method eagle: the EAGLE head's
    # checkpoint (HF id or path; optional where catalog/eagle_heads.py lists one)
    draft_model: str | None = None

    @model_validator(mode="after")
    def _check_profile(self) -> "SpeculativeSpec":
        rates = self.acceptance if isinstance(self.acceptance, list) else [self.acceptance]
        if isinstance(self.acceptance, list) and len(rates) != self.num_tokens:
            raise keyed_error(
                "acceptance",
                f"expected one probability per draft token ({self.num_tokens}, num_tokens) "
                f"or a single rate (got {len(rates)})",
            )
        for i, p in enumerate(rates):
            if not 0.0 < p <= 1.0:
                key = f"acceptance.{i}" if isinstance(self.acceptance, list) else "acceptance"
                raise keyed_error(key, f"expected a probability in (0, 1] (got {p})")
        if self.method == "draft_model" and self.draft_model is None:
            raise keyed_error("draft_model", "method draft_model needs a draft_model name")
        if self.method == "mtp" and self.draft_model is not None:
            raise keyed_error(
                "draft_model",
                "only for methods draft_model and eagle (mtp drafts with the model's own "
                "MTP layers)",
            )
        return self

    @property
    def rates(self) -> tuple[float, ...]:
        """The conditional acceptance probabilities p_1 … p_k."""
        if isinstance(self.acceptance, list):
            return tuple(float(p) for p in self.acceptance)
        return (float(self.acceptance),) * self.num_tokens
