"""The command line's allocator settings (clustersim/cli/allocator.py): freed arrays are
reused, not unmapped and faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from clustersim.cli import entry

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Ten 3.2 MB arrays made and freed 20 times: with glibc's defaults each round maps and
# faults in fresh pages (≈ 150k faults); with the freed blocks kept, none.
CHURN = """
import resource, sys
import numpy as np
from clustersim.cli.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
arrays = [np.ones(400_000) for _ in range(10)]
del arrays
before = faults()
for _ in range(20):
    arrays = [np.ones(400_000) for _ in range(10)]
    del arrays
print(kept, faults() - before)
"""


def churn_faults(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_arrays_are_reused_without_page_faults() -> None:
    kept, faults = churn_faults("keep")
    assert kept == "True"
    assert faults < 1000  # 20 rounds × 10 arrays × 782 pages would be 156k
    _, default_faults = churn_faults("default")
    assert default_faults > 10 * max(faults, 1000)  # (the case the setting is for)


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    from clustersim.cli import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


def test_the_command_line_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(entry, "keep_freed_memory", lambda: calls.append(True) or True)
    assert entry.main(["--version"]) == 0
    assert calls == [True]
