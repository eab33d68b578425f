"""Expert routing: per-layer popularity, its drifting hot set, per-step sampling, and the ledger
of routed tokens behind experts.parquet (docs/moe.md).

Popularity. Each MoE layer l has weights w[l, e] (Σ_e = 1) over its E routed experts:
  uniform    w = 1/E
  zipf       w ∝ 1 / rank^skew, with a random per-layer permutation saying which expert holds
             which rank (skew 0 = uniform)
  dirichlet  w ~ Dirichlet(concentration · 1), drawn per layer
  trace      a layers × experts table from `routing.path` (CSV or YAML; 1 row = every layer)
A token picks k distinct experts, so expert e is in a token's top-k with probability
π[l, e] = min(1, c_l · w[l, e]), c_l set so Σ_e π = k (capped water-filling: an expert can be
picked by every token, never more). A (token, expert) pair lands on e with share p = π / k.

Drift. Every `drift_interval_s` (and, with `drift_on_phase_change`, whenever the MMPP arrival
state changes) the per-layer permutation is redrawn: the hot set moves to other experts. The
change is applied lazily, at the first step at or after its time.

Sampling of per-rank loads: moe/routing_draws.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import yaml

from clustersim.config.schema import RoutingSpec

if TYPE_CHECKING:
    import pandas as pd

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

EXPERT_COLUMNS = (
    "bin_start_s",
    "group",
    "rank",
    "expert",
    "tokens",
    "max_rank_tokens",
    "mean_rank_tokens",
)


class PopularityTableError(ValueError):
    """A routing.path table that cannot be read or does not fit the model (one line)."""


# ------------------------------------------------------------------ popularity


def zipf_weights(num_experts: int, skew: float) -> F64:
    """Weights ∝ 1 / rank^skew for ranks 1..E, normalised (rank 1 first)."""
    w = np.arange(1, num_experts + 1, dtype=np.float64) ** (-float(skew))
    out: F64 = w / w.sum()
    return out


def inclusion_probabilities(weights: F64, top_k: int) -> F64:
    """Per-layer top-k inclusion probabilities π (rows sum to k, every entry in [0, 1]).

    π = min(1, c · w) with c per row such that Σ π = k: experts that would exceed 1 are capped
    (picked by every token) and the remaining mass is shared by the others in proportion to w.
    Rows need at least k positive weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum(axis=1, keepdims=True)
    capped = np.zeros(w.shape, dtype=bool)
    pi = top_k * w
    for _ in range(w.shape[1]):  # each round caps at least one more expert, or stops
        over = pi > 1.0 + 1e-12
        if not over.any():
            break
        capped |= over
        free = top_k - capped.sum(axis=1, keepdims=True)  # mass left for uncapped experts
        rest = np.where(capped, 0.0, w)
        scale = free / np.maximum(rest.sum(axis=1, keepdims=True), 1e-300)
        pi = np.where(capped, 1.0, rest * scale)
    out: F64 = np.minimum(pi, 1.0)
    return out


def _read_table(path: Path) -> F64:
    """A numeric matrix from CSV (an optional header row) or YAML (list of rows, or a mapping
    with a `popularity` key)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict):
            data = data.get("popularity")
        if not isinstance(data, list) or not data:
            raise PopularityTableError(
                f"{path}: expected a list of rows (layers) of expert weights, "
                "or a mapping with a 'popularity' key"
            )
        if not isinstance(data[0], list):
            data = [data]
        try:
            return np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise PopularityTableError(f"{path}: rows of numbers expected ({err})") from None
    text = path.read_text().strip().splitlines()
    if text and not _numeric_row(text[0]):
        text = text[1:]  # header
    try:
        rows = [[float(x) for x in line.split(",")] for line in text if line.strip()]
        return np.asarray(rows, dtype=np.float64)
    except ValueError as err:
        raise PopularityTableError(f"{path}: rows of numbers expected ({err})") from None


def _numeric_row(line: str) -> bool:
    try:
        [float(x) for x in line.split(",")]
    except ValueError:
        return False
    return True


def load_popularity_table(path: str | Path, num_layers: int, num_experts: int, top_k: int) -> F64:
    """The routing.path table as (num_layers, num_experts) weights (a 1-row table is repeated).

    Raises PopularityTableError naming the file and the shape expected by the model.
    """
    p = Path(path)
    try:
        table = _read_table(p)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())
        raise PopularityTableError(f"{p}: cannot read the popularity table ({reason})") from None
    if table.ndim != 2 or table.shape[1] != num_experts or table.shape[0] not in (1, num_layers):
        shape = "×".join(str(s) for s in table.shape)
        raise PopularityTableError(
            f"{p}: popularity table is {shape} (rows × columns); the model needs "
            f"{num_layers} MoE layers (or 1 row for all) × {num_experts} experts"
        )
    if not np.isfinite(table).all() or (table < 0).any():
        raise PopularityTableError(f"{p}: popularity weights must be finite and >= 0")
    with np.errstate(over="ignore"):  # an overflowing row is the error reported here
        row_sums = table.sum(axis=1)
    if not np.isfinite(row_sums).all():
        raise PopularityTableError(f"{p}: each row's weights must sum to a finite number")
    positive = (table > 0).sum(axis=1)
    if positive.min() < top_k:
        row = int(positive.argmin())
        raise PopularityTableError(
            f"{p}: row {row} has {int(positive[row])} positive weights; top-{top_k} routing "
            f"needs at least {top_k}"
        )
    out: F64 = np.repeat(table, num_layers, axis=0) if table.shape[0] == 1 else table
    return out


def phase_change_times(start_s: Sequence[float] | F64, state: Sequence[int] | I64) -> F64:
    """Times (s) at which a piecewise-constant state timeline changes state."""
    starts = np.asarray(start_s, dtype=np.float64)
    states = np.asarray(state)
    if len(states) < 2:
        return np.empty(0, dtype=np.float64)
    changed = states[1:] != states[:-1]
    out: F64 = starts[1:][changed]
    return out


class ExpertTraffic:
    """The deployment's routing popularity over time, shared by every EP group.

    `pair_share[l, e]` = p = π / k for MoE layer l (model-wide MoE layer index); `epoch` counts
    hot-set changes so that users can cache what they derive from it.
    """

    def __init__(
        self,
        routing: RoutingSpec,
        num_layers: int,
        num_experts: int,
        top_k: int,
        rng: np.random.Generator,
        table: F64 | None = None,
        phase_changes_s: F64 | None = None,
    ) -> None:
        if num_layers < 1 or num_experts < 1 or not 0 < top_k <= num_experts:
            raise ValueError(
                f"bad MoE shape: {num_layers} layers, {num_experts} experts, top-{top_k}"
            )
        self.num_layers, self.num_experts, self.top_k = num_layers, num_experts, top_k
        self._rng = rng
        dist = routing.distribution
        if dist == "trace":
            if table is None:
                raise ValueError("routing distribution 'trace' needs a popularity table")
            base = np.asarray(table, dtype=np.float64)
        elif dist == "zipf":
            base = np.tile(zipf_weights(num_experts, routing.skew), (num_layers, 1))
        elif dist == "dirichlet":
            alpha = np.full(num_experts, routing.concentration)
            base = rng.dirichlet(alpha, size=num_layers)
        else:
            base = np.full((num_layers, num_experts), 1.0 / num_experts)
        self._base = base / base.sum(axis=1, keepdims=True)
        # a uniform popularity never changes under permutation: no draws, no drift
        self._static = bool(np.allclose(self._base, 1.0 / num_experts, rtol=0, atol=1e-15))
        self._perm: I64 = np.tile(np.arange(num_experts, dtype=np.int64), (num_layers, 1))
        if dist in ("zipf", "dirichlet") and not self._static:
            self._perm = self._draw_permutation()
        self.epoch = 0
        self.pair_share: F64 = self._shares()
        self._drift_s = routing.drift_interval_s
        self._next_drift = self._drift_s if self._drift_s > 0 else math.inf
        changes = phase_changes_s if routing.drift_on_phase_change else None
        self._phase_changes = [] if changes is None else [float(t) for t in changes]
        self._next_phase = 0  # index of the next phase change not yet applied
        self.drifts = 0
        self.samplers = 0  # EP groups drawing their routing from this traffic's stream

    def next_change_s(self) -> float:
        """The earliest time (s) at which `advance` may change the popularity (inf: never)."""
        if self._static:
            return math.inf
        phases = self._phase_changes
        nxt = self._next_drift
        if self._next_phase < len(phases) and phases[self._next_phase] < nxt:
            nxt = phases[self._next_phase]
        return nxt

    def _draw_permutation(self) -> I64:
        ident = np.tile(np.arange(self.num_experts, dtype=np.int64), (self.num_layers, 1))
        out: I64 = self._rng.permuted(ident, axis=1)
        return out

    def _shares(self) -> F64:
        weights = np.take_along_axis(self._base, self._perm, axis=1)
        out: F64 = inclusion_probabilities(weights, self.top_k) / self.top_k
        return out

    def advance(self, now: float) -> bool:
        """Apply hot-set changes due at or before `now` (s); True if the popularity changed."""
        due = False
        if now >= self._next_drift:
            due = True
            # next boundary on the drift grid strictly after now
            self._next_drift = (math.floor(now / self._drift_s) + 1) * self._drift_s
        phases = self._phase_changes
        while self._next_phase < len(phases) and phases[self._next_phase] <= now:
            self._next_phase += 1
            due = True
        if not due or self._static:
            return False
        self._perm = self._draw_permutation()
        self.pair_share = self._shares()
        self.epoch += 1
        self.drifts += 1
        return True


# ------------------------------------------------------------------ ledger


class ExpertLedger:
    """Routed tokens of one EP group per time bin, per (rank, logical expert), summed over
    layers; plus, per bin, Σ over (step, layer) of the max-rank and mean-rank loads.

    Per-expert tokens are the per-(layer, rank) sampled loads split over the rank's slots in
    proportion to their expected shares (the routing is not sampled per expert), so a rank's
    rows add up to its sampled load. A step is booked in the bin where it starts.
    """

    def __init__(self, group: int, ranks: int, num_experts: int, bin_s: float) -> None:
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        self.group, self.ranks, self.num_experts, self.bin_s = group, ranks, num_experts, bin_s
        self._cells: dict[int, F64] = {}  # bin → tokens per (rank · E + expert)
        self._stats: dict[int, list[float]] = {}  # bin → [Σ max-rank, Σ mean-rank]
        self._bin = -1
        self._acc: F64 | None = None  # Σ loads (layers, ranks) since the last flush
        self._flat: I64 | None = None  # (layers, slots) flat cell index of each slot
        self._share: F64 | None = None  # (layers, slots) share of its rank's load
        self._slot_rank: I64 | None = None  # (slots,) rank of each slot

    def set_context(self, slot_rank: I64, logical: I64, share: F64) -> None:
        """New placement or popularity: how a rank's load splits over its slots from now on."""
        self.flush()
        self._slot_rank = slot_rank
        self._flat = slot_rank[None, :] * self.num_experts + logical
        self._share = share

    def record(self, now: float, loads: F64) -> None:
        """Book one step's (layers, ranks) loads at time `now` (s)."""
        self._book(now, loads, float(loads.max(axis=1).sum()), float(loads.sum()))

    def record_steps(self, starts: Sequence[float], loads: F64) -> None:
        """Book steps starting at `starts` (s, in order) with (steps, layers, ranks) `loads`:
        the same floats, added in the same order, as `record` step by step (a decode leap's
        steps: moe/routed_leap.py); each step's max-rank and total sums taken at once."""
        maxes = loads.max(axis=2).sum(axis=1).tolist()
        totals = loads.reshape(len(loads), -1).sum(axis=1).tolist()
        for i, now in enumerate(starts):
            self._book(now, loads[i], maxes[i], totals[i])

    def _book(self, now: float, loads: F64, max_rank_sum: float, total: float) -> None:
        """Add a step's loads at `now` (s), with Σ over layers of its max-rank load and its
        total (pairs), to the accumulator and its bin's statistics."""
        b = int(now / self.bin_s)
        if b != self._bin:
            self.flush()
            self._bin = b
        if self._acc is None:
            self._acc = loads.copy()
        else:
            self._acc += loads
        stats = self._stats.get(b)
        if stats is None:
            stats = self._stats[b] = [0.0, 0.0]
        stats[0] += max_rank_sum
        stats[1] += total / self.ranks

    def flush(self) -> None:
        """Move the accumulated loads into the current bin's per-expert cells."""
        acc = self._acc
        if acc is None or self._flat is None or self._share is None or self._slot_rank is None:
            return
        weights = acc[:, self._slot_rank] * self._share
        cells: F64 = np.bincount(
            self._flat.ravel(), weights=weights.ravel(), minlength=self.ranks * self.num_experts
        ).astype(np.float64)
        prev = self._cells.get(self._bin)
        self._cells[self._bin] = cells if prev is None else prev + cells
        self._acc = None

    def frame(self) -> pd.DataFrame:
        """Rows (bin, rank, expert) with tokens > 0, columns EXPERT_COLUMNS."""
        import pandas as pd

        self.flush()
        parts: list[pd.DataFrame] = []
        e = self.num_experts
        for b in sorted(self._cells):
            cells = self._cells[b]
            idx = np.flatnonzero(cells > 0)
            stats = self._stats.get(b, [0.0, 0.0])
            n = len(idx)
            parts.append(
                pd.DataFrame(
                    {
                        "bin_start_s": np.full(n, b * self.bin_s),
                        "group": np.full(n, self.group, dtype=np.int64),
                        "rank": (idx // e).astype(np.int64),
                        "expert": (idx % e).astype(np.int64),
                        "tokens": cells[idx],
                        "max_rank_tokens": np.full(n, stats[0]),
                        "mean_rank_tokens": np.full(n, stats[1]),
                    }
                )
            )
        if not parts:
            return empty_experts_frame()
        return pd.concat(parts, ignore_index=True)


def empty_experts_frame() -> pd.DataFrame:
    """An experts table with no rows and the right column types."""
    import pandas as pd

    return pd.DataFrame(
        {
            "bin_start_s": np.empty(0),
            "group": np.empty(0, dtype=np.int64),
            "rank": np.empty(0, dtype=np.int64),
            "expert": np.empty(0, dtype=np.int64),
            "tokens": np.empty(0),
            "max_rank_tokens": np.empty(0),
            "mean_rank_tokens": np.empty(0),
        }
    )
