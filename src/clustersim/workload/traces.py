"""Request trace readers.

Azure LLM inference trace format (Azure/AzurePublicDataset on GitHub, e.g.
data/AzureLLMInferenceTrace_conv.csv): a CSV with a header and the columns

    TIMESTAMP        invocation time, e.g. "2023-11-16 18:15:46.6805900"
    ContextTokens    prompt length (tokens)
    GeneratedTokens  output length (tokens)

Extra columns are ignored. Rows are put in time order (stable) if they are not already.

Mooncake FAST'25 trace format (kvcache-ai/Mooncake, FAST25-release/traces/): JSON lines, one
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from clustersim.config.schema import TraceSpec
from clustersim.workload.prefix_blocks import PrefixBlocks

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

AZURE_TIME = "TIMESTAMP"
AZURE_PROMPT = "ContextTokens"
AZURE_OUTPUT = "GeneratedTokens"
AZURE_COLUMNS = (AZURE_TIME, AZURE_PROMPT, AZURE_OUTPUT)
_AZURE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # the 2023 traces; anything else falls back to ISO 8601


# Bounds on what a trace may hold: a token count above MAX_TRACE_TOKENS is a corrupt cell, not
# a request (no model has a context near it); a header line over MAX_HEADER_BYTES is not a trace.
MAX_TRACE_TOKENS = 100_000_000
MAX_HEADER_BYTES = 65_536


class TraceError(ValueError):
    """A malformed trace: one line naming the file, the data row (1-based) and the column."""

    def __init__(self, path: str | Path, where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where  # "row 3, column 'ContextTokens'", or '' for the file as a whole
        self.problem = problem
        super().__init__(": ".join(filter(None, [self.path, where, problem])))

    def __reduce__(self) -> tuple[type[TraceError], tuple[str, str, str]]:
        return (TraceError, (self.path, self.where, self.problem))


@dataclass(frozen=True, eq=False)
class Trace:
    """A request trace as read-only arrays, one entry per request, in time order."""

    path: str
    timestamps_s: F64  # float64[n], seconds from the first request (first entry 0.0)
    prompt_tokens: I64  # int64[n], >= 1
    output_tokens: I64  # int64[n], >= 1
    prefix: PrefixBlocks | None = None  # per-row prefix-block ids (Mooncake), else None

    def __len__(self) -> int:
        return len(self.timestamps_s)

    @property
    def span_s(self) -> float:
        """Time from the first to the last request (s)."""
        return float(self.timestamps_s[-1]) if len(self) else 0.0


def _bad_value(
    path: Path, column: str, raw: pd.Series, bad: npt.NDArray[np.bool_], what: str
) -> TraceError:
    """TraceError naming the file, the first bad data row (1-based), the column and its value."""
    i = int(np.flatnonzero(bad)[0])
    value = str(raw.iloc[i])
    shown = value if len(value) <= 40 else value[:37] + "..."
    return TraceError(
        path,
        f"row {i + 1}, column {column!r}",
        f"expected {what}, got {shown!r} ({int(bad.sum())} bad value(s))",
    )


_TOKENS_WHAT = f"an integer token count from 0 to {MAX_TRACE_TOKENS:,}"


def _parse_tokens(path: Path, column: str, raw: pd.Series) -> I64:
    """Token counts as int64; TraceError naming file, row and column on anything that is not
    an integer in [0, MAX_TRACE_TOKENS]."""
    if pd.api.types.is_integer_dtype(raw.dtype):
        ints = raw.to_numpy(dtype=np.int64)
        bad = (ints < 0) | (ints > MAX_TRACE_TOKENS)
        if bad.any():
            raise _bad_value(path, column, raw, bad, _TOKENS_WHAT)
        return ints
    num = pd.to_numeric(raw, errors="coerce")
    values = num.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = (
            ~np.isfinite(values)
            | (values != np.round(values))
            | (values < 0)
            | (values > MAX_TRACE_TOKENS)
        )
    if bad.any():
        raise _bad_value(path, column, raw, bad, _TOKENS_WHAT)
    return values.astype(np.int64)


def _parse_times_ns(path: Path, raw: pd.Series) -> I64:
    """Timestamps as int64 nanoseconds since the epoch (UTC if zoned), vectorised."""
    try:
        stamps = pd.to_datetime(raw, format=_AZURE_TIME_FORMAT)
    except (ValueError, TypeError):
        stamps = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        raise _bad_value(path, AZURE_TIME, raw, bad, "a timestamp (e.g. 2023-11-16 18:15:46.68)")
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert(None)
    return stamps.to_numpy().astype("datetime64[ns]").astype(np.int64)


def _read_header(path: Path) -> list[str]:
    """The CSV header's column names, read from at most MAX_HEADER_BYTES of the file (a huge
    or binary first line is refused without parsing it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_HEADER_BYTES + 1)
    except OSError as err:
        raise TraceError(path, "", f"cannot read the file: {err.strerror}") from None
    if not head.strip():
        raise TraceError(path, "", "empty file (expected a CSV header and rows)")
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > MAX_HEADER_BYTES:
        raise TraceError(path, "row 0", f"header line longer than {MAX_HEADER_BYTES:,} bytes")
    if b"\0" in line:
        raise TraceError(path, "", "not a text CSV file (binary content)")
    try:
        text = line.decode("utf-8-sig").strip("\r")
    except UnicodeDecodeError:
        raise TraceError(path, "", "not a UTF-8 CSV file") from None
    return [name.strip().strip('"') for name in text.split(",")]


def _read_azure_frame(path: Path) -> pd.DataFrame:
    """The three Azure columns; fast path with explicit dtypes, text fallback for diagnosis."""
    header = _read_header(path)
    missing = [c for c in AZURE_COLUMNS if c not in header]
    if missing:
        found = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise TraceError(
            path,
            f"column {missing[0]!r}",
            f"missing (an Azure trace needs {', '.join(AZURE_COLUMNS)}; found {found})",
        )
    dtypes = {AZURE_TIME: str, AZURE_PROMPT: np.int64, AZURE_OUTPUT: np.int64}
    try:
        return pd.read_csv(path, usecols=list(AZURE_COLUMNS), dtype=dtypes)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError, pd.errors.ParserError):
        pass  # a malformed cell: re-read as text so the error can name the row and column
    try:
        return pd.read_csv(path, usecols=list(AZURE_COLUMNS), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise TraceError(path, "", f"not a readable CSV file ({problem})") from None


@functools.lru_cache(maxsize=8)
def _read_azure_cached(path_str: str, mtime_ns: int, size: int) -> Trace:
    """Read + parse; cached on (path, mtime, size) so sweeps read a trace file once."""
    path = Path(path_str)
    frame = _read_azure_frame(path)
    if len(frame) == 0:
        raise TraceError(path, "", "trace has no rows (only a header)")
    ns = _parse_times_ns(path, frame[AZURE_TIME])
    prompt = _parse_tokens(path, AZURE_PROMPT, frame[AZURE_PROMPT])
    output = _parse_tokens(path, AZURE_OUTPUT, frame[AZURE_OUTPUT])
    if (np.diff(ns) < 0).any():
        order = np.argsort(ns, kind="stable")
        ns, prompt, output = ns[order], prompt[order], output[order]
    seconds = (ns - ns[0]).astype(np.float64) * 1e-9  # ns → s from the first request
    arrays = (seconds, np.maximum(prompt, 1), np.maximum(output, 1))
    for a in arrays:
        a.flags.writeable = False  # shared through the cache: callers must copy to modify
    return Trace(str(path), *arrays)


def read_azure_trace(path: str | Path) -> Trace:
    """Read an Azure LLM inference trace CSV.

    Returns seconds from the first row, prompt tokens and output tokens (both clipped to
    >= 1). Raises FileNotFoundError if the file is absent and ValueError naming the file and
    the row and the column (TraceError) when a column is missing or a value is malformed.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{p}: trace file not found (the Azure LLM inference traces are published in "
            f"the GitHub repository Azure/AzurePublicDataset, folder data/)"
        ) from None
    return _read_azure_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


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
            raise _bad_row(path, row, MOONCAKE_PROMPT, _TOKENS_WHAT, p)
        if not _is_int(o, MAX_TRACE_TOKENS):
            raise _bad_row(path, row, MOONCAKE_OUTPUT, _TOKENS_WHAT, o)
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
    return Trace(str(path), *arrays, prefix=prefix)


def read_mooncake_trace(path: str | Path) -> Trace:
    """Read a Mooncake FAST'25 JSON-lines trace (format in the module docstring).

    Returns seconds from the first row, prompt and output tokens (clipped to >= 1) and the
    rows' prefix-block ids (`Trace.prefix`, 512-token blocks). Raises FileNotFoundError if the
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


TRACE_READERS = {"azure": read_azure_trace, "mooncake": read_mooncake_trace}


def read_trace(path: str | Path, format: str) -> Trace:
    """Read a trace file in `format` (azure | mooncake)."""
    reader = TRACE_READERS.get(format)
    if reader is None:
        raise TraceError(
            path, "", f"unsupported trace format {format!r} (one of {', '.join(TRACE_READERS)})"
        )
    return reader(path)


def resolve_trace_path(spec: TraceSpec, base_dir: str | Path) -> Path:
    """The trace file path: absolute as given, else relative to `base_dir`."""
    p = Path(os.path.expanduser(spec.path))
    return p if p.is_absolute() else Path(base_dir) / p


def load_trace(spec: TraceSpec, base_dir: str | Path) -> Trace:
    """Read the trace a `TraceSpec` names (relative paths resolve against `base_dir`)."""
    if spec.format not in TRACE_READERS:
        raise TraceError(spec.path, "", f"unsupported trace format {spec.format!r}")
    return read_trace(resolve_trace_path(spec, base_dir), spec.format)
