"""metrics/linear_percentile.py: numpy's linear percentile, the same bits, without numpy.ma."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clustersim.metrics.linear_percentile import linear_percentiles

samples = arrays(
    np.float64,
    st.integers(1, 300),
    elements=st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        st.sampled_from([0.0, -0.0, 1.0, 0.1, 1e-300, 5e-324, 2.5]),  # ties, signs, subnormals
    ),
)
qs = st.lists(
    st.one_of(st.floats(0.0, 100.0), st.sampled_from([0.0, 50.0, 90.0, 99.0, 99.9, 100.0])),
    min_size=1,
    max_size=5,
)


@settings(max_examples=400, deadline=None)
@given(samples, qs)
def test_the_same_bits_as_numpy(x: np.ndarray, q: list[float]) -> None:
    before = x.copy()
    got = linear_percentiles(x, q)
    want = [float(np.percentile(x, p, method="linear")) for p in q]
    assert np.array_equal(np.array(got).view(np.int64), np.array(want).view(np.int64))
    assert np.array_equal(x, before, equal_nan=True)  # the sample is left as it was


def test_summary_percentiles_of_a_large_sample() -> None:
    x = np.random.default_rng(3).lognormal(-2.0, 1.0, 100_001)
    got = linear_percentiles(x, (50.0, 90.0, 99.0))
    assert got == [float(np.percentile(x, q)) for q in (50.0, 90.0, 99.0)]


def test_out_of_range_and_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        linear_percentiles(np.array([]), (50.0,))
    with pytest.raises(ValueError, match="outside"):
        linear_percentiles(np.array([1.0]), (101.0,))


def test_loads_no_numpy_ma() -> None:
    probe = (
        "import sys, numpy as np\n"
        "from clustersim.metrics.linear_percentile import linear_percentiles\n"
        "linear_percentiles(np.arange(10.0), (50.0, 99.0))\n"
        "print('numpy.ma' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
