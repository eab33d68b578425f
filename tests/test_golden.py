"""Result files of small seeded runs are pinned by sha256 (tests/golden/hashes.json).

Performance work must leave these byte-identical. An intended change of the numbers (cost
model, fabric) regenerates them: `python -m tests.golden.cases`, or run this file with
CLUSTERSIM_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from golden.cases import CASES, HASHES, run_hashes, write_hashes

UPDATE = os.environ.get("CLUSTERSIM_UPDATE_GOLDEN") == "1"
_updated: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_hashes(name: str, tmp_path: Path) -> None:
    got = run_hashes(name, tmp_path)
    if UPDATE:
        stored = json.loads(HASHES.read_text()) if HASHES.exists() else {}
        stored[name] = got
        write_hashes(stored)
        return
    expected = json.loads(HASHES.read_text())[name]
    assert got == expected, (
        f"{name}: result files changed; if intended, regenerate with `python -m tests.golden.cases`"
    )
