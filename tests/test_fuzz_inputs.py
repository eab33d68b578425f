"""Fuzz: hypothesis mutates a valid experiment (type swaps, out-of-range and oversized values,
deletions, unknown / misspelled keys, broken referenced files). Every mutant is either valid
or refused with exit 2 and one line naming the file, with no traceback and nothing written.
The explicit seed corpus of issue 12 is tests/test_bad_inputs.py."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim import cli

VALID: dict[str, Any] = {
    "name": "fuzz",
    "seed": 3,
    "model": "llama-3.1-8b",
    "topology": "dgx_h100_x1",
    "layout": {"tp": 1, "dp": 1},
    "serving": {"max_num_seqs": 8, "block_size": 16},
    "workload": "wl.yaml",
    "horizon": {"requests": 6},
    "slo": {"ttft_p99_s": 1.0, "tpot_p99_s": 0.1},
}
WORKLOAD: dict[str, Any] = {
    "arrival": {"process": "poisson", "rate_rps": 20},
    "prompt_tokens": {"dist": "lognormal", "median": 64, "sigma": 0.5, "min": 8, "max": 256},
    "output_tokens": {"dist": "fixed", "value": 4},
}
# (file, key path) of every leaf a mutation may hit
LEAVES: list[tuple[str, tuple[str, ...]]] = [
    ("exp.yaml", ("name",)), ("exp.yaml", ("seed",)), ("exp.yaml", ("model",)),
    ("exp.yaml", ("layout", "tp")), ("exp.yaml", ("serving", "max_num_seqs")),
    ("exp.yaml", ("serving", "block_size")), ("exp.yaml", ("horizon", "requests")),
    ("exp.yaml", ("slo", "ttft_p99_s")), ("wl.yaml", ("arrival", "rate_rps")),
    ("wl.yaml", ("arrival", "process")), ("wl.yaml", ("prompt_tokens", "median")),
    ("wl.yaml", ("prompt_tokens", "min")), ("wl.yaml", ("prompt_tokens", "max")),
    ("wl.yaml", ("output_tokens", "value")),
]  # fmt: skip
BAD_VALUES = st.one_of(
    st.booleans(), st.text(max_size=8), st.just("7"), st.just(None), st.just([]), st.just({}),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.just("x" * 300), st.just(10**400),
)  # fmt: skip
MUTATION = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(LEAVES), BAD_VALUES),
    st.tuples(st.just("delete"), st.sampled_from(LEAVES), st.none()),
    st.tuples(st.just("misspell"), st.sampled_from(LEAVES), st.none()),
    st.tuples(st.just("extra"), st.sampled_from(LEAVES), st.text(min_size=1, max_size=6)),
    st.tuples(st.just("broken_file"), st.sampled_from(LEAVES), st.sampled_from(
        ["{", "- [", "\x00\x01", "a: *b", "[" * 300, ""])),
)  # fmt: skip


def _mutate(docs: dict[str, Any], mutation: tuple[str, tuple[str, tuple[str, ...]], Any]) -> str:
    """Apply one mutation; returns the text to write for a broken file ('' otherwise)."""
    kind, (file, path), value = mutation
    parent = docs[file]
    for key in path[:-1]:
        parent = parent[key]
    leaf = path[-1]
    if kind == "set":
        parent[leaf] = value
    elif kind == "delete":
        del parent[leaf]
    elif kind == "misspell":
        parent[leaf + "x"] = parent.pop(leaf)
    elif kind == "extra":
        parent["zz_" + str(value)] = 1
    return str(value) if kind == "broken_file" else ""


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutation=MUTATION)
def test_mutated_experiments_are_refused_in_one_line(
    mutation: tuple[str, tuple[str, tuple[str, ...]], Any], capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()  # the fixture is shared across examples: start from nothing
    docs = {"exp.yaml": copy.deepcopy(VALID), "wl.yaml": copy.deepcopy(WORKLOAD)}
    broken = _mutate(docs, mutation)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, doc in docs.items():
            (root / name).write_text(_dump(doc))
        if mutation[0] == "broken_file":
            (root / mutation[1][0]).write_text(broken)
        before = sorted(root.rglob("*"))
        rc = cli.main(["validate", str(root / "exp.yaml")])
        err = capfd.readouterr().err
        assert rc in (0, 2), err
        assert "Traceback" not in err and "pydantic.dev" not in err
        if rc == 2:
            (line,) = err.strip().splitlines()
            assert line.startswith("clustersim: error: ")
            assert str(root) in line or "--set" in line, line  # names the file
        assert sorted(root.rglob("*")) == before
