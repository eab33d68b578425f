"""Sweep plots: each headline metric against a swept key, with replicate error bars."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (see plots/__init__)
    from matplotlib.figure import Figure

from clustersim.config.sweep import value_texts
from clustersim.results.plots.canvas import BOUND_STYLE, new_figure

if TYPE_CHECKING:
    import pandas as pd

# (sweep table column, axis label) of each headline metric plotted against a swept key
SWEEP_METRICS: tuple[tuple[str, str], ...] = (
    ("ttft_p99_s", "p99 TTFT (s)"),
    ("tpot_p99_s", "p99 TPOT (s)"),
    ("slo_attainment", "SLO attainment"),
    ("windows_violating", "windows below 99 % attainment"),
    ("goodput_rps", "goodput (req/s)"),
    ("output_tokens_per_s_per_gpu", "output tok/s per GPU"),
)


def _numeric(values: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(values)) and not pd.api.types.is_bool_dtype(values)


def _swept_value(cell: Any) -> Any:
    """A sweep.csv cell back to its YAML value: NaN → None, JSON text → mapping / list."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    if isinstance(cell, str) and cell[:1] in "{[":
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell


def _display_column(column: pd.Series) -> pd.Series:
    """A swept column as the sweep's point labels show it (off / on, v<n>, scalars)."""
    import pandas as pd

    values = [_swept_value(c) for c in column]
    distinct: list[Any] = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    texts = dict(zip(map(repr, distinct), value_texts(distinct), strict=True))
    return pd.Series([texts[repr(v)] for v in values], index=column.index)


def sweep_values(
    group: pd.DataFrame, column: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """A metric's points and, where the sweep ran replicates, the error bars (2 × n:
    below, above) of its 95 % interval: the replicates' mean `<column>_mean` is plotted then;
    points without an interval (single runs) show the run's value and no bar."""
    import pandas as pd

    def col(name: str) -> npt.NDArray[np.float64]:
        return pd.to_numeric(group[name], errors="coerce").to_numpy(dtype=np.float64)

    y = col(column)
    lo_name, hi_name, mean_name = f"{column}_ci_lo", f"{column}_ci_hi", f"{column}_mean"
    if not {lo_name, hi_name, mean_name} <= set(group.columns):
        return y, None
    mean, lo, hi = col(mean_name), col(lo_name), col(hi_name)
    has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(mean)
    if not has.any():
        return y, None
    y = np.where(has, mean, y)
    yerr = np.vstack([np.where(has, y - lo, 0.0), np.where(has, hi - y, 0.0)])
    return y, np.clip(yerr, 0.0, None)


def plot_sweep(table: pd.DataFrame, key: str, others: Sequence[str] = ()) -> Figure:
    """Each headline metric against swept key `key`; one line per combination of `others`."""
    table = table.copy()
    for column in (key, *others):
        if not _numeric(table[column]):
            table[column] = _display_column(table[column])
    fig = new_figure("sweep")
    axes = fig.subplots(2, 3).ravel()
    metrics = [(c, label) for c, label in SWEEP_METRICS if c in table.columns]
    numeric = _numeric(table[key])
    categories = list(dict.fromkeys(table[key].astype(str))) if not numeric else []
    groups = table.groupby(list(others), sort=False, dropna=False) if others else [("", table)]
    for ax, (column, label) in zip(axes, metrics, strict=False):
        for i, (name, group) in enumerate(groups):
            if numeric:
                group = group.sort_values(key, kind="stable")
                x: npt.ArrayLike = group[key].to_numpy(dtype=np.float64)
            else:
                x = [categories.index(v) for v in group[key].astype(str)]
            y, yerr = sweep_values(group, column)
            text = ", ".join(map(str, name)) if isinstance(name, tuple) else str(name)
            ax.plot(x, y, marker="o", color=f"C{i % 10}", label=text or None)
            if yerr is not None:  # replicated points: 95 % CI of the replicates' mean
                ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=f"C{i % 10}", capsize=3)
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20, fontsize=7, ha="right")
        if column.endswith("attainment"):
            ax.axhline(0.99, **BOUND_STYLE)
        ax.set_ylabel(label)
        ax.set_xlabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    if others and len(table) > 1:
        axes[0].legend(fontsize=7, title=", ".join(others), title_fontsize=7)
    fig.suptitle(f"Headline metrics against {key}")
    return fig


def sweep_plot_name(key: str) -> str:
    """File name of the sweep plot of key path `key`: sweep_<key, path-safe>.png."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    return f"sweep_{safe}.png"
