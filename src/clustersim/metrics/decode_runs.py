"""Rows of leaped decode steps, kept as the leap's own lists until the rows are read.

A decode leap (serving/decode_leap.py) runs k steps of one lane (PP = 1) whose rows differ
only in their times, their compute and their blocks in use. Rather than packing k rows when
it ends (a row is ≈ 1 µs of Python), it hands the recorder its lists (`Recorder.
on_decode_run`), whose values are appended to float64 columns at once, and `take_rows`
builds the rows of many runs at once in numpy, every HELD_RUNS runs and when the
recorder's table is built. They are the values a stepping
lane writes: start = the previous step's end, communication = end − (start + compute) with
the same float64 operations, integers as float64, in the recorder's column order
(metrics/recorder.py: ITERATION_COLUMNS). Rows are sorted by (start, replica, stage, lane)
afterwards, which no two steps share, so where in the buffer they go does not matter.
"""

from __future__ import annotations

from array import array

import numpy as np

# Steps 0..steps−1 of a run of n-sequence decode steps of a replica from `start`: step i
# ends at ends[i] after compute_s[i] of compute (then communication if `comm`) and holds
# kv_used[i] blocks, the last one kv_used_last. The lists' first `steps` entries are copied
# when the run is added.
# (replica, n, start, ends, compute_s, steps, comm, kv_used, kv_used_last, kv_capacity)
DecodeRun = tuple[int, int, float, list[float], list[float], int, bool, list[int], int, int]
WIDTH = 14  # columns of an iteration row
HELD_RUNS = 1024  # runs held before their rows are built (their lists stay in cache)


class DecodeRuns:
    """Leaped decode steps not yet written as rows (see module docstring)."""

    __slots__ = ("_compute", "_ends", "_heads", "_starts", "_used", "count")

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.count = 0  # runs held
        # the held runs' column values, converted to float64 as each run arrives (its lists
        # are still in cache then; read back later, scattered floats cost ≈ 45 ns each)
        self._starts = array("d")
        self._ends = array("d")
        self._compute = array("d")
        self._used = array("d")
        self._heads: list[tuple[int, int, int, bool, int]] = []  # replica, n, steps, comm, cap

    def add(self, run: DecodeRun) -> bool:
        """Hold `run`; True when HELD_RUNS are held (time to `take_rows`)."""
        replica, n, start, ends, compute, k, comm, used, last_used, capacity = run
        starts = self._starts
        starts.append(start)
        starts.fromlist(ends[: k - 1])
        self._ends.fromlist(ends[:k])
        self._compute.fromlist(compute[:k])
        held = self._used
        held.extend(used[: k - 1])  # (ints, as float64)
        held.append(last_used)
        self._heads.append((replica, n, k, comm, capacity))
        self.count += 1
        return self.count >= HELD_RUNS

    def take_rows(self) -> bytes:
        """Every held run's rows, native float64s row after row (`Recorder.iterations`'
        layout), in run order; forgets the runs."""
        replicas, ns, counts, comms, capacities = zip(*self._heads, strict=True)
        start_col = np.frombuffer(self._starts, dtype=np.float64)
        end_col = np.frombuffer(self._ends, dtype=np.float64)
        compute_col = np.frombuffer(self._compute, dtype=np.float64)
        used_col = np.frombuffer(self._used, dtype=np.float64)
        self._clear()
        table = np.zeros((len(end_col), WIDTH))
        table[:, 0] = np.repeat(np.array(replicas, dtype=np.float64), counts)
        n_col = np.repeat(np.array(ns, dtype=np.float64), counts)
        comm = np.repeat(np.array(comms, dtype=bool), counts)
        table[:, 3] = start_col
        table[:, 4] = end_col
        table[:, 6] = n_col  # decode tokens
        table[:, 7] = n_col  # sequences
        table[:, 8] = n_col  # batch tokens
        table[:, 9] = compute_col
        table[:, 10] = np.where(comm, end_col - (start_col + compute_col), 0.0)
        table[:, 12] = used_col
        table[:, 13] = np.repeat(np.array(capacities, dtype=np.float64), counts)
        return table.tobytes()
