"""Request trace readers.

Azure LLM inference trace format (Azure/AzurePublicDataset on GitHub, e.g.
data/AzureLLMInferenceTrace_conv.csv): a CSV with a header and the columns

    TIMESTAMP        invocation time, e.g. "2023-11-16 18:15:46.6805900"
    ContextTokens    prompt length (tokens)
    GeneratedTokens  output length (tokens)

Extra columns are ignored. Rows are put in time order (stable) if they are not already.

Mooncake FAST'25 JSON lines: workload/mooncake_trace.py. `read_trace` / `load_trace` pick the
reader by format.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from clustersim.config.schema import TraceSpec
from clustersim.workload.mooncake_trace import read_mooncake_trace
from clustersim.workload.trace_table import (
    I64,
    MAX_HEADER_BYTES,
    MAX_TRACE_TOKENS,
    TOKENS_WHAT,
    Trace,
    TraceError,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Trace", "TraceError", "load_trace", "read_azure_trace", "read_trace"]


AZURE_TIME = "TIMESTAMP"
AZURE_PROMPT = "ContextTokens"
AZURE_OUTPUT = "GeneratedTokens"
AZURE_COLUMNS = (AZURE_TIME, AZURE_PROMPT, AZURE_OUTPUT)
_AZURE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # the 2023 traces; anything else falls back to ISO 8601


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


def _parse_tokens(path: Path, column: str, raw: pd.Series) -> I64:
    """Token counts as int64; TraceError naming file, row and column on anything that is not
    an integer in [0, MAX_TRACE_TOKENS]."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(raw.dtype):
        ints = raw.to_numpy(dtype=np.int64)
        bad = (ints < 0) | (ints > MAX_TRACE_TOKENS)
        if bad.any():
            raise _bad_value(path, column, raw, bad, TOKENS_WHAT)
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
        raise _bad_value(path, column, raw, bad, TOKENS_WHAT)
    return values.astype(np.int64)


def _parse_times_ns(path: Path, raw: pd.Series) -> I64:
    """Timestamps as int64 nanoseconds since the epoch (UTC if zoned), vectorised."""
    import pandas as pd

    try:
        stamps = pd.to_datetime(raw, format=_AZURE_TIME_FORMAT)
    except (ValueError, TypeError):
        stamps = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        raise _bad_value(path, AZURE_TIME, raw, bad, "a timestamp (e.g. 2023-11-16 18:15:46.68)")
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert(None)
    # int64 nanoseconds span 1677-2262; a date beyond would wrap around silently
    micros = stamps.to_numpy().astype("datetime64[us]").astype(np.int64)
    limit = np.iinfo(np.int64).max // 1000
    outside = (micros > limit) | (micros < -limit)
    if outside.any():
        raise _bad_value(path, AZURE_TIME, raw, outside, "a timestamp between 1678 and 2261")
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
    import pandas as pd

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
    if float(ns.max()) - float(ns.min()) >= float(np.iinfo(np.int64).max):
        raise TraceError(path, AZURE_TIME, "expected timestamps within 292 years of each other")
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
