"""Every experiment in experiments/ at a small horizon is pinned by sha256.

See tests/golden/experiments.py. A refactor must pass this unchanged; an intended change of
the numbers regenerates the hashes with `python -m tests.golden.experiments`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden.experiments import HASHES, experiment_names, run_hashes


def test_every_experiment_is_pinned() -> None:
    assert sorted(json.loads(HASHES.read_text())) == experiment_names()


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_hashes(name: str, tmp_path: Path) -> None:
    expected = json.loads(HASHES.read_text())[name]
    got = run_hashes(name, tmp_path)
    changed = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not changed, (
        f"{name}: result files changed ({', '.join(changed[:5])}); if intended, regenerate "
        "with `python -m tests.golden.experiments`"
    )
