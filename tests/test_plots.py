"""PNG plots (clustersim.results.plots): hand-made tables in, fixed-size non-empty PNGs out."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from clustersim.config.schema import SLOSpec
from clustersim.metrics.timeline import timeline_table
from clustersim.results import plots
from clustersim.results.plots import PLOT_SIZES_PX, Bounds, Series
from clustersim.workload.arrivals import StateTimeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the PNG header (signature, then the IHDR chunk)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_png(data: bytes, name: str) -> None:
    """A decodable PNG of plot `name`'s fixed size with something drawn on it."""
    assert png_size(data) == PLOT_SIZES_PX[name]
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == PLOT_SIZES_PX[name][::-1]
    assert float(pixels[..., :3].std()) > 0.02  # not a blank canvas


def requests_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, 60, n))
    ttft = rng.lognormal(-2.0, 0.8, n)
    tpot = rng.lognormal(-3.5, 0.3, n)
    out = rng.integers(1, 200, n)
    first = arrival + ttft
    finish = first + tpot * np.maximum(out - 1, 0)
    dropped = rng.random(n) < 0.01
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "arrival_s": arrival,
            "first_token_s": np.where(dropped, np.nan, first),
            "finish_s": np.where(dropped, np.nan, finish),
            "prompt_tokens": rng.integers(10, 2000, n),
            "output_tokens": out,
            "replica": np.zeros(n, dtype=int),
            "ttft_s": np.where(dropped, np.nan, ttft),
            "tpot_s": np.where(dropped | (out == 1), np.nan, tpot),
            "e2e_s": np.where(dropped, np.nan, finish - arrival),
            "queue_s": np.where(dropped, np.nan, ttft / 2),
            "preemptions": np.zeros(n, dtype=int),
            "dropped": dropped,
        }
    )


def links_table(n_links: int = 20, n_bins: int = 60) -> pd.DataFrame:
    """Link i carries utilisation (i + 1) / (n_links + 1) in every other bin."""
    rows = [
        (f"l{i:02d}", "nvlink", float(b), 1e9, (i + 1) / (n_links + 1))
        for i in range(n_links)
        for b in range(0, n_bins, 2)
    ]
    return pd.DataFrame(rows, columns=["link", "kind", "bin_start_s", "bytes", "utilisation"])


def experts_table() -> pd.DataFrame:
    """4 EP ranks × 2 experts each, 30 bins; rank 3 is hot; (bin 5, rank 1) missing (0)."""
    rows = []
    for b in range(30):
        for rank in range(4):
            if (b, rank) == (5, 1):
                continue
            for expert in (2 * rank, 2 * rank + 1):
                rows.append((float(b), rank, expert, 100 * (3 if rank == 3 else 1) + b))
    return pd.DataFrame(rows, columns=["bin_start_s", "rank", "expert", "tokens"])


PHASES = StateTimeline(
    start_s=np.array([0.0, 10.0, 14.0, 40.0, 43.0]), state=np.array([0, 1, 0, 1, 0]),
    end_s=70.0, rates_rps=(5.0, 50.0),
)  # fmt: skip
SLO = SLOSpec(ttft_p99_s=0.5, tpot_p99_s=0.05)
BOUNDS = Bounds(ttft_s=0.5, tpot_s=0.05, warmup_s=5.0)


@pytest.fixture(scope="module")
def timeline() -> pd.DataFrame:
    return timeline_table(requests_table(), None, links_table(), 1.0, SLO, 5.0, PHASES).to_frame()


# --------------------------------------------------------------------------- run plots


def test_every_run_plot_has_its_fixed_size(tmp_path: Path, timeline: pd.DataFrame) -> None:
    series = [Series("run", requests_table(), timeline)]
    figures = {
        "latency_cdf": plots.plot_latency_cdf(series, BOUNDS),
        "latency_timeline": plots.plot_latency_timeline(series, BOUNDS, worst_window_s=12.0),
        "queue_kv": plots.plot_queue_kv(timeline, 5.0),
        "link_heatmap": plots.plot_link_heatmap(links_table(), 1.0),
        "expert_heatmap": plots.plot_expert_heatmap(experts_table()),
        "ttft_overview": plots.plot_ttft_overview(series, BOUNDS),
    }
    for name, fig in figures.items():
        data = plots.save_png(fig, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes() == data
        check_png(data, name)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes


def test_sizes_follow_inches_times_dpi() -> None:
    for name, (w_in, h_in) in plots.PLOT_SIZES_IN.items():
        assert PLOT_SIZES_PX[name] == (round(w_in * plots.DPI), round(h_in * plots.DPI))


def test_overlaid_runs_and_missing_data_keep_the_size(timeline: pd.DataFrame) -> None:
    other = timeline_table(requests_table(seed=1), None, links_table(), 2.0, SLO, 5.0).to_frame()
    two = [Series("A", requests_table(), timeline), Series("B", requests_table(seed=1), other)]
    check_png(plots.png_bytes(plots.plot_latency_cdf(two, BOUNDS)), "latency_cdf")
    check_png(plots.png_bytes(plots.plot_latency_timeline(two, BOUNDS)), "latency_timeline")
    empty_links = links_table().iloc[0:0]
    no_links = plots.png_bytes(plots.plot_link_heatmap(empty_links, 1.0))
    assert png_size(no_links) == PLOT_SIZES_PX["link_heatmap"]
    no_bounds = plots.plot_latency_cdf(two[:1], Bounds())
    check_png(plots.png_bytes(no_bounds), "latency_cdf")


def test_bursts_are_shaded_only_with_phases(timeline: pd.DataFrame) -> None:
    fig = plots.new_figure("queue_kv")
    ax = fig.add_subplot()
    assert plots.shade_bursts(ax, timeline)
    calm = timeline.assign(burst_fraction=np.nan)
    assert not plots.shade_bursts(fig.add_subplot(2, 1, 2), calm)


def test_link_heatmap_keeps_the_busiest_links() -> None:
    grid = plots.link_matrix(links_table(n_links=20), 1.0, top_n=16)
    assert grid.shape == (16, 59)  # 16 of 20 links; bins 0 … 58, odd bins filled with 0
    assert list(grid.index[:3]) == ["l19", "l18", "l17"]  # busiest first
    assert "l00" not in grid.index
    assert grid.iloc[0, 1] == 0.0 and grid.iloc[0, 0] == pytest.approx(20 / 21)


def test_expert_matrix_sums_experts_and_fills_missing_ranks() -> None:
    grid = plots.expert_matrix(experts_table())
    assert grid.shape == (4, 30)
    assert grid.loc[3, 0.0] == 2 * 300  # two experts of the hot rank
    assert grid.loc[1, 5.0] == 0.0  # the missing (bin, rank) row


# --------------------------------------------------------------------------- sweep plots


def sweep_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": ["a", "b", "c", "d"],
            "experts.routing.skew": [0.0, 1.2, 0.0, 1.2],
            "layout": ['{"tp":2}', '{"tp":2}', '{"tp":4}', '{"tp":4}'],
            "run_dir": ["a", "b", "c", "d"],
            "ttft_p99_s": [0.1, 0.3, 0.2, None],
            "tpot_p99_s": [0.01, 0.02, 0.015, 0.03],
            "slo_attainment": [1.0, 0.9, 0.99, 0.5],
            "windows_violating": [0, 3, 1, 9],
            "goodput_rps": [10.0, 9.0, 9.9, 5.0],
            "output_tokens_per_s_per_gpu": [100.0, 90.0, 99.0, 50.0],
        }
    )


def test_sweep_plots_numeric_and_categorical_keys() -> None:
    table = sweep_table()
    numeric = plots.plot_sweep(table, "experts.routing.skew", others=["layout"])
    check_png(plots.png_bytes(numeric), "sweep")
    categorical = plots.plot_sweep(table, "layout", others=["experts.routing.skew"])
    check_png(plots.png_bytes(categorical), "sweep")
    alone = plots.plot_sweep(table.iloc[:2].drop(columns=["layout"]), "experts.routing.skew")
    check_png(plots.png_bytes(alone), "sweep")
    assert plots.sweep_plot_name("workload.arrival.rates_rps") == (
        "sweep_workload.arrival.rates_rps.png"
    )
    assert plots.sweep_plot_name("a b/c") == "sweep_a_b_c.png"


def test_cdf_thinning_keeps_the_tail_exact() -> None:
    for n in (0, 1, 5, 100, 19_175):
        keep = plots.cdf_points(n)
        assert (np.diff(keep) > 0).all()
        if n:
            assert keep[0] == 0 and keep[-1] == n - 1
        tail = int(n * 0.95)
        assert set(range(tail, n)) <= set(keep.tolist())  # every point of the top 5 %
        assert len(keep) <= plots.CDF_BODY_POINTS + (n - tail)


def engine_experts_table() -> pd.DataFrame:
    """The MoE engine's layout: 2 EP groups × 2 ranks, per-layer max / mean rank tokens per
    (bin, group) repeated on each row; bins 0, 1, 3 (bin 2 routed nothing)."""
    rows = []
    for b in (0.0, 1.0, 3.0):
        for group in (0, 1):
            for rank in (0, 1):
                tokens = 30.0 if (group, rank) == (1, 1) else 10.0
                rows.append((b, group, rank, 2 * rank, tokens, 90.0 + group, 60.0))
    columns = ["bin_start_s", "group", "rank", "expert", "tokens", "max_rank_tokens",
               "mean_rank_tokens"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_expert_heatmap_of_several_groups_uses_the_engine_statistics() -> None:
    experts = engine_experts_table()
    grid = plots.expert_matrix(experts)
    assert list(grid.index) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert grid.columns.tolist() == [0.0, 1.0, 2.0, 3.0]  # the empty bin is filled in
    assert grid[2.0].sum() == 0.0 and grid.loc[(1, 1), 0.0] == 30.0
    ratio = plots.expert_imbalance_series(experts, grid)
    assert ratio[[0, 1, 3]] == pytest.approx([181.0 / 120.0] * 3)  # Σ_groups max / Σ mean
    assert np.isnan(ratio[2])
    plain = experts.drop(columns=["max_rank_tokens", "mean_rank_tokens"])
    assert plots.expert_imbalance_series(plain, grid)[0] == pytest.approx(30.0 / 15.0)
    check_png(plots.png_bytes(plots.plot_expert_heatmap(experts)), "expert_heatmap")
