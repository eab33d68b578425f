"""Mooncake FAST'25 trace reader, prefix-block columns and their request streams."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clustersim.config.schema import HorizonSpec, TraceSpec, WorkloadSpec
from clustersim.workload.mooncake_trace import _read_mooncake_cached, read_mooncake_trace
from clustersim.workload.prefix_blocks import PrefixBlocks
from clustersim.workload.requests import RequestStream, generate_requests
from clustersim.workload.traces import TraceError, load_trace, read_trace

TRACES = Path(__file__).parents[1] / "traces"
CONV = TRACES / "mooncake_conversation_trace.jsonl"
SYNTH = TRACES / "mooncake_synthetic_trace.jsonl"
AZURE = TRACES / "AzureLLMInferenceTrace_conv.csv"


def _write(tmp_path: Path, rows: list[Any], name: str = "t.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def _row(t: float, p: int, o: int, ids: list[int]) -> dict[str, Any]:
    return {"timestamp": t, "input_length": p, "output_length": o, "hash_ids": ids}


def _mooncake_spec(path: Path, use_lengths: bool = True) -> TraceSpec:
    # TraceSpec.format does not list "mooncake" until the schema gains it (integration step)
    return TraceSpec.model_construct(
        path=str(path), format="mooncake", time_scale=1.0, use_lengths=use_lengths
    )


def _workload(trace: TraceSpec, arrival: dict[str, Any]) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"arrival": arrival, "trace": trace})


# ---- the shipped traces -------------------------------------------------------------------


def test_read_conversation_trace() -> None:
    tr = read_mooncake_trace(CONV)
    assert len(tr) == 12031
    assert tr.span_s == pytest.approx(3536.999)
    assert tr.timestamps_s[0] == 0.0 and (np.diff(tr.timestamps_s) >= 0).all()
    assert tr.prompt_tokens.mean() == pytest.approx(12035, abs=1)
    assert tr.output_tokens.mean() == pytest.approx(343, abs=1)
    assert tr.prefix is not None and tr.prefix.block_tokens == 512
    assert (tr.prefix.counts == -(-tr.prompt_tokens // 512)).all()
    assert list(tr.prefix.row(1)[:3]) == [0, 14, 15]  # the second line of the file
    with pytest.raises(ValueError):
        tr.prompt_tokens[0] = 5  # shared through the cache: read-only


def test_read_synthetic_trace_and_dispatch() -> None:
    tr = read_trace(SYNTH, "mooncake")
    assert len(tr) == 3993 and tr.span_s == pytest.approx(1022.025)
    assert read_trace(AZURE, "azure").prefix is None
    with pytest.raises(TraceError, match="unsupported trace format 'csv'"):
        read_trace(AZURE, "csv")
    assert load_trace(_mooncake_spec(SYNTH), "/") is tr


def test_full_conversation_replay_stream_builds_fast() -> None:
    """Reading the full hour and building its request stream (the replay's input) is cheap."""
    _read_mooncake_cached.cache_clear()
    t0 = time.perf_counter()
    spec = _workload(_mooncake_spec(CONV), {"process": "trace"})
    rs = generate_requests(
        spec,
        HorizonSpec(duration_s=3600),
        np.random.default_rng(0),
        np.random.default_rng(1),
    )
    wall = time.perf_counter() - t0
    assert len(rs) == 12031 and rs.prefix is not None
    assert rs.prefix.ids.tolist() == read_mooncake_trace(CONV).prefix.ids.tolist()  # type: ignore[union-attr]
    assert wall < 3.0, f"{wall:.2f} s"


# ---- parsing ------------------------------------------------------------------------------


def test_unsorted_rows_are_sorted_with_their_ids(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        [_row(2000, 600, 5, [1, 2]), _row(500, 10, 0, [7]), _row(2000, 512, 3, [1])],
    )
    tr = read_mooncake_trace(p)
    assert tr.timestamps_s.tolist() == [0.0, 1.5, 1.5]
    assert tr.prompt_tokens.tolist() == [10, 600, 512]
    assert tr.output_tokens.tolist() == [1, 5, 3]  # clipped to >= 1
    assert tr.prefix is not None
    assert [tr.prefix.row(i).tolist() for i in range(3)] == [[7], [1, 2], [1]]


def test_blank_lines_and_extra_keys_are_ignored(tmp_path: Path) -> None:
    p = _write(tmp_path, [_row(0, 5, 1, [3]), "", {**_row(1, 5, 1, []), "x": 1}, "   "])
    tr = read_mooncake_trace(p)
    assert len(tr) == 2 and tr.prefix is not None and tr.prefix.counts.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("rows", "where", "what"),
    [
        ([_row(0, 5, 1, [1]), "{not json"], "row 2", "not a JSON object"),
        ([_row(0, 5, 1, [1]), "[1, 2]"], "row 2", "expected a JSON object"),
        (
            [{"timestamp": 0, "input_length": 5, "output_length": 1}],
            "row 1, column 'hash_ids'",
            "missing",
        ),
        ([_row(0, 5, 1, [1]), _row(-1, 5, 1, [1])], "row 2, column 'timestamp'", "time in ms"),
        ([_row(0, 5.5, 1, [1])], "row 1, column 'input_length'", "integer token count"),
        ([_row(0, 5, "7", [1])], "row 1, column 'output_length'", "integer token count"),
        ([_row(0, 5, 1, 3)], "row 1, column 'hash_ids'", "a list of integer block ids"),
        ([_row(0, 5, 1, [1]), _row(0, 5, 1, [1, -2])], "row 2, column 'hash_ids'", ">= 0"),
        ([_row(0, 5, 1, [1.0])], "row 1, column 'hash_ids'", ">= 0"),
        ([_row(0, 5, 1, [2**70])], "row 1, column 'hash_ids'", ">= 0"),
        ([_row(0, 513, 1, [1, 2, 3])], "row 1, column 'hash_ids'", "3 block ids for 513"),
        ([_row(0, True, 1, [1])], "row 1, column 'input_length'", "integer token count"),
    ],
)
def test_errors_name_file_row_and_key(
    tmp_path: Path, rows: list[Any], where: str, what: str
) -> None:
    p = _write(tmp_path, rows)
    with pytest.raises(TraceError) as info:
        read_mooncake_trace(p)
    err = info.value
    assert err.path == str(p.resolve()) and err.where == where and what in err.problem
    assert "\n" not in str(err)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="kvcache-ai/Mooncake"):
        read_mooncake_trace(tmp_path / "absent.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TraceError, match="no rows"):
        read_mooncake_trace(empty)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(TraceError, match="binary"):
        read_mooncake_trace(binary)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": "\xe9"}\n')
    with pytest.raises(TraceError, match="UTF-8"):
        read_mooncake_trace(latin)


# ---- request streams ----------------------------------------------------------------------


def test_cycled_trace_shifts_ids_per_pass(tmp_path: Path) -> None:
    p = _write(tmp_path, [_row(0, 600, 5, [0, 1]), _row(1000, 100, 5, [0])])
    spec = _workload(_mooncake_spec(p), {"process": "trace"})
    rs = generate_requests(
        spec, HorizonSpec(requests=5), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert rs.prefix is not None
    rows = [rs.prefix.row(j).tolist() for j in range(5)]
    assert rows == [[0, 1], [0], [2, 3], [2], [4, 5]]  # pass c adds c · (max id + 1)


def test_closed_loop_and_synthetic_arrivals_carry_ids(tmp_path: Path) -> None:
    p = _write(tmp_path, [_row(0, 600, 5, [0, 1]), _row(1000, 100, 5, [0])])
    closed = _workload(_mooncake_spec(p), {"process": "closed", "concurrency": 2})
    rs = generate_requests(
        closed, HorizonSpec(requests=3), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert rs.prefix is not None and rs.prefix.counts.tolist() == [2, 1, 2]
    poisson = _workload(_mooncake_spec(p), {"process": "poisson", "rate_rps": 3})
    rs = generate_requests(
        poisson, HorizonSpec(requests=4), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert rs.prefix is not None and len(rs.prefix) == 4


def test_ids_only_when_lengths_come_from_the_trace(tmp_path: Path) -> None:
    p = _write(tmp_path, [_row(0, 600, 5, [0, 1]), _row(1000, 100, 5, [0])])
    spec = WorkloadSpec.model_validate(
        {
            "arrival": {"process": "trace"},
            "trace": _mooncake_spec(p, use_lengths=False),
            "prompt_tokens": {"dist": "fixed", "value": 10},
            "output_tokens": {"dist": "fixed", "value": 10},
        }
    )
    rs = generate_requests(
        spec, HorizonSpec(requests=2), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert rs.prefix is None and rs.session_id is None


def test_azure_streams_have_no_prefix_column() -> None:
    spec = _workload(TraceSpec(path=str(AZURE), format="azure"), {"process": "trace"})
    rs = generate_requests(
        spec, HorizonSpec(requests=10), np.random.default_rng(0), np.random.default_rng(1)
    )
    assert rs.prefix is None and rs.session_id is None


def test_request_stream_checks_the_new_columns() -> None:
    one = np.ones(2, dtype=np.int64)
    t = np.zeros(2)
    with pytest.raises(ValueError, match="prefix has 1 rows"):
        RequestStream(t, one, one, prefix=PrefixBlocks.from_lists([[1]], 16))
    with pytest.raises(ValueError, match="session_id has 3 rows"):
        RequestStream(t, one, one, session_id=np.arange(3))
    rs = RequestStream(t, one, one, session_id=np.arange(2))
    assert rs.session_id is not None and not rs.session_id.flags.writeable


# ---- ragged column ------------------------------------------------------------------------


def test_prefix_blocks_take_and_validation() -> None:
    pb = PrefixBlocks.from_lists([[5, 6], [], [7, 8, 9]], 512)
    assert len(pb) == 3 and pb.counts.tolist() == [2, 0, 3]
    sub = pb.take([2, 0, 2], id_shift=[0, 100, 10])
    assert [sub.row(i).tolist() for i in range(3)] == [[7, 8, 9], [105, 106], [17, 18, 19]]
    assert pb.take([]).ids.size == 0 and len(pb.take([])) == 0
    assert not pb.ids.flags.writeable and not pb.offsets.flags.writeable
    with pytest.raises(ValueError, match="offsets"):
        PrefixBlocks(np.arange(3), np.array([0, 2]), 16)
    with pytest.raises(ValueError, match="offsets"):
        PrefixBlocks(np.arange(3), np.array([0, 2, 1, 3]), 16)
    with pytest.raises(ValueError, match="block_tokens"):
        PrefixBlocks(np.arange(0), np.array([0]), 0)
