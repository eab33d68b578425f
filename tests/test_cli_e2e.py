"""Command line, end to end, on bad input: exit 2, one line naming the file and the key path
(or the numbers, for placement and memory), no traceback, and earlier results untouched."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from clustersim import cli

GOOD = """\
name: good
seed: 3
model: llama-3.1-8b
topology: dgx_h100_x1
layout: {tp: 1, dp: 1}
serving: {max_num_seqs: 64}
workload:
  arrival: {process: poisson, rate_rps: 20}
  prompt_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 8}
horizon: {requests: 12}
"""

WORKLOAD_FILE = """\
arrival: {process: poisson, rate_rps: 5}
prompt_tokens: {dist: fixed, value: 128}
output_tokens: {dist: fixed, valeu: 8}
"""


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


# (case id, experiment text, extra CLI args, substrings the error line must contain).
# "{exp}" stands for the experiment file's path as given on the command line; "re:" marks a
# regular expression (numbers that belong to the memory model, not to this test).
CASES: list[tuple[str, str, list[str], list[str]]] = [
    ("unknown key", edit("{max_num_seqs: 64}", "{max_num_seqz: 64}"), [],
     ["{exp}", "serving.max_num_seqz", "unknown key"]),
    ("wrong type", edit("rate_rps: 20", "rate_rps: fast"), [],
     ["{exp}", "workload.arrival.rate_rps", "'fast'"]),
    ("impossible value", edit("{max_num_seqs: 64}", "{gpu_memory_utilization: 1.5}"), [],
     ["{exp}", "serving.gpu_memory_utilization", "1.5"]),
    ("missing referenced file",
     edit(GOOD[GOOD.index("workload:"):GOOD.index("horizon:")], "workload: workloads/gone.yaml\n"),
     [], ["{exp}", "workload", "gone.yaml", "not found"]),
    ("error inside a referenced file",
     edit(GOOD[GOOD.index("workload:"):GOOD.index("horizon:")], "workload: wl/chat.yaml\n"),
     [], ["wl/chat.yaml", "output_tokens.valeu"]),
    ("unknown model", edit("llama-3.1-8b", "llama-3.1-9b"), [],
     ["{exp}", "model", "llama-3.1-9b"]),
    ("more GPUs than the topology", edit("{tp: 1, dp: 1}", "{tp: 4, pp: 2, dp: 2}"), [],
     ["{exp}", "16 GPUs", "has 8"]),
    ("tp does not divide heads", edit("{tp: 1, dp: 1}", "{tp: 3, dp: 1}"), [],
     ["{exp}", "tp = 3", "num_attention_heads = 32"]),
    ("model does not fit", edit("llama-3.1-8b", "llama-3.1-405b"), [],
     ["{exp}", "llama-3.1-405b", "exceed", r"re:weights \d+\.\d+ GiB"]),
    ("bad --set value", GOOD, ["--set", "layout.tp=zero"], ["--set", "layout.tp", "'zero'"]),
    ("bad --set syntax", GOOD, ["--set", "layout.tp"], ["--set", "layout.tp", "key.path=value"]),
    ("bad --set key", GOOD, ["--set", "serving.max_num_seqz=4"],
     ["serving.max_num_seqz", "unknown key"]),
    ("--set makes it not fit", GOOD, ["--set", "serving.gpu_memory_utilization=0.1"],
     ["{exp}", "× 0.10", r"re:weights \d+\.\d+ GiB"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def out_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root already holding one good run (plots and report included)."""
    root = tmp_path_factory.mktemp("e2e")
    (root / "good.yaml").write_text(GOOD)
    out = root / "results"
    assert cli.main(["run", str(root / "good.yaml"), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = (out / "good").iterdir()
    assert (run_dir / "summary.json").is_file() and (run_dir / "requests.parquet").is_file()
    return out


@pytest.mark.parametrize(("text", "extra", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_leaves_results_alone(
    tmp_path: Path,
    out_root: Path,
    snapshot: Callable[[Path], dict[str, bytes]],
    capsys: pytest.CaptureFixture[str],
    text: str,
    extra: list[str],
    expect: list[str],
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(text)
    (tmp_path / "wl").mkdir()
    (tmp_path / "wl" / "chat.yaml").write_text(WORKLOAD_FILE)
    before = snapshot(out_root)
    capsys.readouterr()
    code = cli.main(["run", str(exp), "--out", str(out_root), "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("clustersim: error: ")
    for part in expect:
        if part.startswith("re:"):
            assert re.search(part[3:], line), (part, line)
        else:
            assert part.replace("{exp}", str(exp)) in line, (part, line)
    assert captured.out == ""  # no summary table: nothing ran
    assert snapshot(out_root) == before  # same files, same bytes, nothing new


def test_validate_reports_the_same_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(edit("{tp: 1, dp: 1}", "{tp: 3, dp: 1}"))
    assert cli.main(["validate", str(exp)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert str(exp) in line and "tp = 3" in line and "Traceback" not in captured.err


def test_absurd_request_count_is_refused_with_the_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[1]
    rc = cli.main(
        [
            "run",
            str(repo / "experiments" / "dense_tp_vs_pp.yaml"),
            "--out",
            str(tmp_path),
            "--quiet",
            "--set",
            "workload.arrival.rate_rps=1e7",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "requests, above the limit of" in err and "limits.max_requests" in err
    assert "Traceback" not in err
