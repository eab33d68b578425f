"""Progress bars on stderr (tqdm): one run over simulated seconds, and overall counters.

tqdm is imported when a bar is drawn: a `--quiet` run does without it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(
    total_s: float | None, desc: str, quiet: bool
) -> Iterator[Callable[[float], None] | None]:
    """A tqdm bar on stderr over simulated seconds; yields the engine's progress callback."""
    if quiet:
        yield None
        return
    if total_s is None:
        fmt = "{desc}: {n:.1f} sim s [{elapsed}]"
    else:
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} sim s [{elapsed}<{remaining}]"
    from tqdm import tqdm

    with tqdm(total=total_s, desc=desc, file=sys.stderr, bar_format=fmt, leave=False) as bar:

        def advance(now_s: float) -> None:
            if bar.total is not None and now_s > bar.total:
                bar.total = now_s  # draining past the arrival horizon
            bar.update(now_s - bar.n)

        yield advance


@contextmanager
def overall_bar(total: int, quiet: bool) -> Iterator[Callable[[], None]]:
    """One bar on stderr over every run (points × replicates) with an ETA; yields `tick`."""
    if quiet or total <= 1:
        yield lambda: None
        return
    fmt = "runs: {n}/{total} |{bar}| [{elapsed}<{remaining}]"
    from tqdm import tqdm

    with tqdm(total=total, file=sys.stderr, bar_format=fmt, position=0) as bar:
        yield lambda: bar.update(1)


@contextmanager
def overall_bar_open(quiet: bool, unit: str) -> Iterator[Callable[[], None]]:
    """A counting bar on stderr with no known total (probes of a search)."""
    if quiet:
        yield lambda: None
        return
    from tqdm import tqdm

    with tqdm(file=sys.stderr, desc=unit, bar_format="{desc}: {n} [{elapsed}]") as bar:
        yield lambda: bar.update(1)
