"""Rows of leaped decode steps, kept as the leap's own lists until the rows are read.

A decode leap (serving/decode_leap.py) runs k steps of one lane (PP = 1) whose rows differ
only in their times, their compute and their blocks in use. Rather than packing k rows when
it ends (a row is ≈ 1 µs of Python), it hands the recorder its lists (`Recorder.
on_decode_run`, no copy), and `take_rows` builds the rows of many runs at once in numpy,
every HELD_RUNS runs and when the recorder's table is built. They are the values a stepping
lane writes: start = the previous step's end, communication = end − (start + compute) with
the same float64 operations, integers as float64, in the recorder's column order
(metrics/recorder.py: ITERATION_COLUMNS). Rows are sorted by (start, replica, stage, lane)
afterwards, which no two steps share, so where in the buffer they go does not matter.
"""

from __future__ import annotations

import numpy as np

# Steps 0..steps−1 of a run of n-sequence decode steps of a replica from `start`: step i
# ends at ends[i] after compute_s[i] of compute (then communication if `comm`) and holds
# kv_used[i] blocks, the last one kv_used_last. The lists are read, not copied, when the
# rows are built: their first `steps` entries must not change.
# (replica, n, start, ends, compute_s, steps, comm, kv_used, kv_used_last, kv_capacity)
DecodeRun = tuple[int, int, float, list[float], list[float], int, bool, list[int], int, int]
WIDTH = 14  # columns of an iteration row
HELD_RUNS = 1024  # runs held before their rows are built (their lists stay in cache)


class DecodeRuns:
    """Leaped decode steps not yet written as rows (see module docstring)."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[DecodeRun] = []

    def add(self, run: DecodeRun) -> bool:
        """Hold `run`; True when HELD_RUNS are held (time to `take_rows`)."""
        self.runs.append(run)
        return len(self.runs) >= HELD_RUNS

    def take_rows(self) -> bytes:
        """Every held run's rows, native float64s row after row (`Recorder.iterations`'
        layout), in run order; forgets the runs."""
        runs, self.runs = self.runs, []
        starts: list[float] = []
        ends: list[float] = []
        compute: list[float] = []
        used: list[int] = []
        for _replica, _n, start, e, c, k, _comm, u, last_used, _cap in runs:
            starts.append(start)
            starts += e[: k - 1]
            ends += e[:k]
            compute += c[:k]
            used += u[: k - 1]
            used.append(last_used)
        counts = [run[5] for run in runs]
        table = np.zeros((len(ends), WIDTH))
        table[:, 0] = np.repeat(np.array([run[0] for run in runs], dtype=np.float64), counts)
        start_col = np.array(starts, dtype=np.float64)
        end_col = np.array(ends, dtype=np.float64)
        compute_col = np.array(compute, dtype=np.float64)
        n_col = np.repeat(np.array([run[1] for run in runs], dtype=np.float64), counts)
        comm = np.repeat(np.array([run[6] for run in runs], dtype=bool), counts)
        table[:, 3] = start_col
        table[:, 4] = end_col
        table[:, 6] = n_col  # decode tokens
        table[:, 7] = n_col  # sequences
        table[:, 8] = n_col  # batch tokens
        table[:, 9] = compute_col
        table[:, 10] = np.where(comm, end_col - (start_col + compute_col), 0.0)
        table[:, 12] = np.array(used, dtype=np.float64)
        table[:, 13] = np.repeat(np.array([run[9] for run in runs], dtype=np.float64), counts)
        return table.tobytes()
