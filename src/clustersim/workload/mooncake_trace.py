"""Mooncake FAST'25 trace format (kvcache-ai/Mooncake, FAST25-release/traces/): JSON lines, one
object per request, with the keys

    timestamp      arrival time (ms from the start of the trace)
    input_length   prompt length (tokens)
    output_length  output length (tokens)
    hash_ids       ids of the prompt's 512-token prefix blocks (remapped hashes: requests whose
                   first k ids agree share the KV of their first k × 512 tokens)

Extra keys are ignored; blank lines are skipped. A row may list fewer ids than its prompt has
blocks (those blocks are never shared), never more.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from clustersim.workload.prefix_blocks import PrefixBlocks, successor_answers
from clustersim.workload.trace_table import (
    F64,
    I64,
    MAX_HEADER_BYTES,
    MAX_TRACE_TOKENS,
    TOKENS_WHAT,
    Trace,
    TraceError,
)

MOONCAKE_TIME = "timestamp"
MOONCAKE_PROMPT = "input_length"
MOONCAKE_OUTPUT = "output_length"
MOONCAKE_BLOCKS = "hash_ids"
MOONCAKE_KEYS = (MOONCAKE_TIME, MOONCAKE_PROMPT, MOONCAKE_OUTPUT, MOONCAKE_BLOCKS)
MOONCAKE_BLOCK_TOKENS = 512  # tokens per hash_ids block in the FAST'25 traces
MAX_HASH_ID = (1 << 62) - 1  # ids above this are corrupt (room to shift ids per trace cycle)


def _mooncake_records(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed JSON value) of every non-blank line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TraceError(path, "", f"cannot read the file: {err.strerror}") from None
    if b"\0" in raw[:MAX_HEADER_BYTES]:
        raise TraceError(path, "", "not a text JSON-lines file (binary content)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TraceError(path, "", "not a UTF-8 JSON-lines file") from None
    numbered = [(i + 1, line) for i, line in enumerate(text.split("\n")) if line.strip()]
    if not numbered:
        raise TraceError(path, "", "trace has no rows (empty file)")
    try:  # fast path: the whole file as one JSON array
        values = json.loads("[" + ",".join(line for _, line in numbered) + "]")
        return [(n, v) for (n, _), v in zip(numbered, values, strict=True)]
    except (json.JSONDecodeError, RecursionError):
        pass
    for n, line in numbered:  # find the first line that is not JSON
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            problem = exc.msg
        except RecursionError:
            problem = "nested too deeply"
        else:
            continue
        shown = line.strip()[:37] + ("..." if len(line.strip()) > 37 else "")
        raise TraceError(path, f"row {n}", f"not a JSON object ({problem}): {shown!r}")
    raise AssertionError("unreachable: some line failed to parse above")


def _bad_row(path: Path, row: int, key: str, what: str, value: object) -> TraceError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return TraceError(path, f"row {row}, column {key!r}", f"expected {what}, got {shown}")


def _is_int(v: object, high: int) -> bool:
    return type(v) is int and 0 <= v <= high


def _mooncake_columns(
    path: Path, records: list[tuple[int, object]]
) -> tuple[F64, I64, I64, list[list[int]]]:
    """Timestamps (ms), prompt, output and id lists; TraceError naming row and key."""
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    blocks: list[list[int]] = []
    for row, rec in records:
        if not isinstance(rec, dict):
            raise TraceError(path, f"row {row}", f"expected a JSON object, got {rec!r}"[:120])
        for key in MOONCAKE_KEYS:
            if key not in rec:
                raise TraceError(
                    path,
                    f"row {row}, column {key!r}",
                    f"missing (a Mooncake trace row needs {', '.join(MOONCAKE_KEYS)})",
                )
        t, p, o, h = (rec[k] for k in MOONCAKE_KEYS)
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < 1e15:
            raise _bad_row(path, row, MOONCAKE_TIME, "a time in ms >= 0", t)
        if not _is_int(p, MAX_TRACE_TOKENS):
            raise _bad_row(path, row, MOONCAKE_PROMPT, TOKENS_WHAT, p)
        if not _is_int(o, MAX_TRACE_TOKENS):
            raise _bad_row(path, row, MOONCAKE_OUTPUT, TOKENS_WHAT, o)
        if not isinstance(h, list):
            raise _bad_row(path, row, MOONCAKE_BLOCKS, "a list of integer block ids", h)
        times.append(float(t))
        prompt.append(p)
        output.append(o)
        blocks.append(h)
    return np.asarray(times), np.asarray(prompt, np.int64), np.asarray(output, np.int64), blocks


def _check_block_ids(path: Path, rows: list[int], prefix: PrefixBlocks, prompt: I64) -> None:
    """Every id an integer in [0, MAX_HASH_ID]; no more ids than the prompt has blocks."""
    max_blocks = -(-prompt // MOONCAKE_BLOCK_TOKENS)
    over = prefix.counts > np.maximum(max_blocks, 1)
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise TraceError(
            path,
            f"row {rows[i]}, column {MOONCAKE_BLOCKS!r}",
            f"{int(prefix.counts[i])} block ids for {int(prompt[i])} input tokens (at most "
            f"{int(max_blocks[i])} blocks of {MOONCAKE_BLOCK_TOKENS} tokens)",
        )


def _flat_ids(path: Path, rows: list[int], blocks: list[list[int]]) -> PrefixBlocks:
    """The id lists as one ragged column; TraceError on the first row with a bad id."""
    if all(type(h) is int for r in blocks for h in r):
        flat_ok = True
        try:
            prefix = PrefixBlocks.from_lists(blocks, MOONCAKE_BLOCK_TOKENS)
        except OverflowError:
            flat_ok = False
        if flat_ok and not ((prefix.ids < 0) | (prefix.ids > MAX_HASH_ID)).any():
            return prefix
    for row, ids in zip(rows, blocks, strict=True):
        for h in ids:
            if not _is_int(h, MAX_HASH_ID):
                raise _bad_row(path, row, MOONCAKE_BLOCKS, "integer block ids >= 0", h)
    raise AssertionError("unreachable: some block id failed the checks above")


@functools.lru_cache(maxsize=8)
def _read_mooncake_cached(path_str: str, mtime_ns: int, size: int) -> Trace:
    """Read + parse; cached on (path, mtime, size) like the Azure reader."""
    path = Path(path_str)
    records = _mooncake_records(path)
    rows = [n for n, _ in records]
    ms, prompt, output, blocks = _mooncake_columns(path, records)
    prefix = _flat_ids(path, rows, blocks)
    _check_block_ids(path, rows, prefix, prompt)
    if (np.diff(ms) < 0).any():
        order = np.argsort(ms, kind="stable")
        ms, prompt, output, prefix = ms[order], prompt[order], output[order], prefix.take(order)
    seconds = (ms - ms[0]) * 1e-3  # ms → s from the first request
    arrays = (seconds, np.maximum(prompt, 1), np.maximum(output, 1))
    for a in arrays:
        a.flags.writeable = False  # shared through the cache: callers must copy to modify
    prefix = prefix.with_answers(successor_answers(prefix, arrays[1], arrays[2]))
    return Trace(str(path), *arrays, prefix=prefix)


def read_mooncake_trace(path: str | Path) -> Trace:
    """Read a Mooncake FAST'25 JSON-lines trace (format in the module docstring).

    Returns seconds from the first row, prompt and output tokens (clipped to >= 1) and the
    rows' prefix-block ids (`Trace.prefix`, 512-token blocks; their answer blocks' ids read
    off each request's next turn, prefix_blocks.successor_answers). Raises FileNotFoundError if the
    file is absent and TraceError naming the file, row (line number) and key when a row is
    malformed.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{p}: trace file not found (the Mooncake traces are published in the GitHub "
            f"repository kvcache-ai/Mooncake, folder FAST25-release/traces/)"
        ) from None
    return _read_mooncake_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
