"""`serving.speculative` at load: strict keys, key-path errors, cross-checks against the model
and the layout, and resolved configs that stay as they were without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustersim.catalog.models import get_model, load_hf_config
from clustersim.config.errors import ConfigError
from clustersim.config.load import load_experiment, resolved_config

BASE = """\
name: t
model: {model}
topology: dgx_h100_x1
layout: {layout}
serving:
  speculative: {spec}
workload:
  arrival: {{process: poisson, rate_rps: 1}}
  prompt_tokens: {{dist: fixed, value: 100}}
  output_tokens: {{dist: fixed, value: 10}}
horizon: {{requests: 10}}
"""


def load(tmp_path: Path, spec: str, model: str = "llama-3.1-8b", layout: str = "{tp: 1}") -> Any:
    path = tmp_path / "exp.yaml"
    path.write_text(BASE.format(spec=spec, model=model, layout=layout))
    return load_experiment(path)


def error(tmp_path: Path, spec: str, **kw: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, spec, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message.split(": ", 1)[1]  # without the file name


def test_valid_forms(tmp_path: Path) -> None:
    one = load(tmp_path, "{method: eagle, num_tokens: 3, acceptance: 0.8}").serving.speculative
    assert one.rates == (0.8, 0.8, 0.8)
    per = load(tmp_path, "{method: eagle, num_tokens: 2, acceptance: [0.9, 1]}")
    assert per.serving.speculative.rates == (0.9, 1.0)
    draft = load(
        tmp_path,
        "{method: draft_model, num_tokens: 4, acceptance: 0.7, draft_model: llama-3.1-8b}",
        model="llama-3.1-70b",
        layout="{tp: 4}",
    )
    assert draft.serving.speculative.draft_model == "llama-3.1-8b"
    mtp = load(
        tmp_path,
        "{method: mtp, num_tokens: 1, acceptance: 0.9}",
        model="deepseek-v3",
        layout="{tp: 8, ep: 8}",
    )
    assert mtp.model.num_nextn_predict_layers == 1


EAGLE2 = "method: eagle, num_tokens: 2, acceptance: 0.5"
DRAFT2 = "method: draft_model, num_tokens: 2, acceptance: 0.5"


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ("{method: eagle, num_tokens: 3, acceptance: [0.9, 0.8]}", "acceptance", "one probability"),
        ("{method: eagle, num_tokens: 2, acceptance: [0.9, 0]}", "acceptance.1", "(0, 1]"),
        ("{method: eagle, num_tokens: 2, acceptance: 1.5}", "acceptance", "(0, 1]"),
        ("{method: eagle, num_tokens: 0, acceptance: 0.5}", "num_tokens", ""),
        ("{method: medusa, num_tokens: 2, acceptance: 0.5}", "method", ""),
        ("{" + EAGLE2 + ", k: 3}", "k", "unknown key"),
        ("{" + DRAFT2 + "}", "draft_model", "needs"),
        (
            "{method: mtp, num_tokens: 1, acceptance: 0.9, draft_model: x}",
            "draft_model",
            "only for",
        ),
        ("{" + DRAFT2 + ", draft_model: nope}", "draft_model", "unknown draft model 'nope'"),
        ("{method: mtp, num_tokens: 1, acceptance: 0.9}", "method", "num_nextn_predict_layers: 0"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, spec: str, key: str, words: str) -> None:
    message = error(tmp_path, spec)
    assert message.startswith(f"serving.speculative.{key}:"), message
    assert words in message


def test_accepted_with_dp_attention(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        "{method: mtp, num_tokens: 1, acceptance: 0.9}",
        model="deepseek-v3",
        layout="{tp: 1, dp: 8, ep: 8, dp_attention: true}",
    )
    assert exp.layout.dp_attention and exp.serving.speculative.method == "mtp"


def test_refused_with_context_parallelism(tmp_path: Path) -> None:
    message = error(
        tmp_path, "{method: eagle, num_tokens: 1, acceptance: 0.9}", layout="{tp: 1, cp: 2}"
    )
    assert message.startswith("layout.cp:") and "speculative" in message


def test_resolved_config_reloads_and_is_unchanged_without_it(tmp_path: Path) -> None:
    exp = load(
        tmp_path,
        "{method: mtp, num_tokens: 2, acceptance: [0.9, 0.8]}",
        model="deepseek-v3",
        layout="{tp: 8, ep: 8}",
    )
    cfg = resolved_config(exp)
    assert cfg["serving"]["speculative"]["acceptance"] == [0.9, 0.8]
    assert cfg["model"]["num_nextn_predict_layers"] == 1
    out = tmp_path / "resolved.yaml"
    out.write_text(yaml.safe_dump(cfg))
    assert load_experiment(out).model_copy(update={"base_dir": exp.base_dir}) == exp
    plain = resolved_config(load(tmp_path, "null", model="deepseek-v3", layout="{tp: 8, ep: 8}"))
    assert "speculative" not in plain["serving"]
    assert "num_nextn_predict_layers" not in plain["model"]


def test_hf_config_reads_mtp_layers(tmp_path: Path) -> None:
    ds = get_model("deepseek-v3")
    cfg = {
        "num_hidden_layers": ds.num_layers,
        "hidden_size": ds.hidden_size,
        "num_attention_heads": ds.num_attention_heads,
        "intermediate_size": ds.intermediate_size,
        "vocab_size": ds.vocab_size,
        "num_nextn_predict_layers": 1,
    }
    path = tmp_path / "m" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    assert load_hf_config(path).num_nextn_predict_layers == 1
    del cfg["num_nextn_predict_layers"]
    path.write_text(json.dumps(cfg))
    assert load_hf_config(path).num_nextn_predict_layers == 0


def test_eagle_needs_a_published_head_or_a_checkpoint(tmp_path: Path) -> None:
    spec = "{method: eagle, num_tokens: 2, acceptance: 0.8}"
    message = error(tmp_path, spec, model="mixtral-8x7b", layout="{tp: 2}")
    assert message.startswith("serving.speculative.draft_model:"), message
    assert "no published EAGLE head for model mixtral-8x7b" in message
    given = "{method: eagle, num_tokens: 2, acceptance: 0.8, draft_model: /heads/mixtral}"
    exp = load(tmp_path, given, model="mixtral-8x7b", layout="{tp: 2}")
    assert exp.serving.speculative.draft_model == "/heads/mixtral"
    # a catalog model with a published head needs nothing more
    assert load(tmp_path, spec).serving.speculative.draft_model is None
