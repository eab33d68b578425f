"""Shared fixtures: inline experiment files, KV-cache sizing, result-tree snapshots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from clustersim.config.load import load_experiment
from clustersim.config.schema import Experiment
from clustersim.model.memory import plan_memory

MakeExperiment = Callable[..., Experiment]
KVUtilisation = Callable[[Experiment, int], float]


def write_yaml(directory: Path, text: str, name: str = "exp.yaml") -> Path:
    """Write `text` to directory/name (parents created) and return the path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path → content); {} when `root` does not exist."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def utilisation_for_blocks(exp: Experiment, blocks: int) -> float:
    """Smallest gpu_memory_utilization (to 1e-6) whose memory plan holds >= `blocks` KV blocks
    per replica: sizes a KV cache in blocks whatever the memory model's constants are."""

    def kv_blocks(u: float) -> int:
        serving = exp.serving.model_copy(update={"gpu_memory_utilization": u})
        plan = plan_memory(exp.model, exp.hardware, exp.precision, exp.layout, serving)
        return plan.kv_blocks_per_replica if plan.fits else -1

    lo, hi = 0.0, 1.0
    assert kv_blocks(hi) >= blocks, f"{blocks} KV blocks do not fit at all"
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if kv_blocks(mid) >= blocks else (mid, hi)
    return hi


@pytest.fixture(scope="session")
def kv_utilisation() -> KVUtilisation:
    """`kv_utilisation(exp, blocks) -> gpu_memory_utilization` for ~`blocks` KV blocks."""
    return utilisation_for_blocks


@pytest.fixture
def make_experiment(tmp_path: Path) -> MakeExperiment:
    """`make_experiment(text, overrides=()) -> Experiment`: inline YAML, loaded as a user's
    file would be (built-in names resolved, --set style overrides applied, validated)."""
    count = [0]

    def make(text: str, overrides: Sequence[str] = ()) -> Experiment:
        count[0] += 1
        path = write_yaml(tmp_path, text, f"inline_{count[0]}.yaml")
        return load_experiment(path, list(overrides))

    return make


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes]]:
    """`snapshot(root) -> {relative path: bytes}` of every file under root."""
    return tree_bytes
