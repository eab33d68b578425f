"""Named, independent random streams derived from one experiment seed.

Every source of randomness in a run draws from its own `numpy.random.Generator`, obtained by
name from one `Streams` object. Each stream's seed is derived from the experiment seed and a
stable hash of the name (BLAKE2b, not Python's salted `hash()`), so:

* the same (seed, name) always gives the same stream, in every process and Python version;
* the order in which names are first requested does not matter;
* adding a new stream name never perturbs the existing ones.

Names used by the simulator: "arrivals", "lengths", "router", "experts", "eplb",
"speculative" (acceptance draws, serving/speculative_decode.py).
"""

from __future__ import annotations

import hashlib

import numpy as np

# Spawn-key prefix that keeps named children apart from `SeedSequence(seed).spawn(k)` children,
# whose spawn keys are the 1-tuples (0,), (1,), ...
_NAMED_KEY_PREFIX = 0x6E616D65  # "name" in ASCII


def name_key(name: str) -> tuple[int, int]:
    """Stable 64-bit hash of `name`, as two uint32 words (a SeedSequence spawn key)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


class Streams:
    """One `SeedSequence(seed)`; `get(name)` returns that name's Generator (created once)."""

    __slots__ = ("_generators", "_root")

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._root = np.random.SeedSequence(int(seed))
        self._generators: dict[str, np.random.Generator] = {}

    @property
    def seed(self) -> int:
        entropy = self._root.entropy
        assert isinstance(entropy, int)
        return entropy

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """A fresh SeedSequence for `name` (e.g. to hand to another process)."""
        if not name:
            raise ValueError("stream name must be a non-empty string")
        return np.random.SeedSequence(
            self._root.entropy, spawn_key=(_NAMED_KEY_PREFIX, *name_key(name))
        )

    def get(self, name: str) -> np.random.Generator:
        """The Generator of stream `name`; repeated calls return the same (stateful) object."""
        gen = self._generators.get(name)
        if gen is None:
            gen = np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
            self._generators[name] = gen
        return gen

    def fresh(self, name: str) -> np.random.Generator:
        """A new Generator at the start of stream `name`, independent of `get(name)`'s state."""
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))

    def __repr__(self) -> str:
        return f"Streams(seed={self.seed}, names={sorted(self._generators)})"
