"""Seeds: ``random_state`` is resolved once per fit, and every candidate, pass and
block derives its own child seed from it, so results never depend on scheduling."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "SEED_CANDIDATE",
    "SEED_INIT",
    "SEED_PARTIAL",
    "SEED_PASS",
    "child",
    "draw_seed",
    "root_seed",
    "seed_int",
]

# Purposes of the child seed sequences derived from a fit's root seed.
SEED_INIT, SEED_CANDIDATE, SEED_PASS, SEED_PARTIAL = range(4)


def root_seed(random_state: Any) -> np.random.SeedSequence:
    """The root of a fit's seeds: an int seeds it directly, anything else draws
    from ``check_random_state`` (so a RandomState instance advances, as in
    scikit-learn)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return np.random.SeedSequence(int(random_state))
    rs = check_random_state(random_state)
    return np.random.SeedSequence(rs.randint(0, 2**31 - 1, size=4).tolist())


def draw_seed(random_state: Any) -> int:
    """One int seed drawn from ``random_state``, as scikit-learn's estimators draw."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def child(root: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """The child of ``root`` for ``key`` (a purpose, then indices): the same key
    always gives the same sequence."""
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *key))


def seed_int(ss: np.random.SeedSequence) -> int:
    """A 32-bit int seed from a seed sequence."""
    return int(ss.generate_state(1, np.uint32)[0])
