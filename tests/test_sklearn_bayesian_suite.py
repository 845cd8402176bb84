"""scikit-learn's ``mixture/tests/test_bayesian_mixture.py``, run against
StreamingBayesianGaussianMixture.

The installed file is read at test time (see ``sklearn_port``); its
``BayesianGaussianMixture`` is StreamingBayesianGaussianMixture, in process and
without progress bars.
"""

from __future__ import annotations

import pytest
from sklearn_port import (
    applicability,
    expected_failure,
    global_dtype,
    global_random_seed,
    port,
    sklearn_spelling,
)

from streamclust import StreamingBayesianGaussianMixture

SWAPPED = sklearn_spelling(
    StreamingBayesianGaussianMixture,
    "BayesianGaussianMixture",
    {},
    client="sync",
    progress=False,
)

#: Cases that exercise BayesianGaussianMixture but not behaviour streamclust shares.
NOT_APPLICABLE: dict[str, str] = {}

# scikit-learn runs these tests with a ConvergenceWarning shown, not raised.
pytestmark = pytest.mark.filterwarnings("default::sklearn.exceptions.ConvergenceWarning")

port("mixture/tests/test_bayesian_mixture.py", {"BayesianGaussianMixture": SWAPPED}, globals())


def not_applicable(item):
    """Why a collected case does not apply (None: it runs); see ``tests/conftest.py``."""
    return applicability(item, "BayesianGaussianMixture", SWAPPED, (), NOT_APPLICABLE)


#: Cases that fail still, each with what is missing (strict: a fixed case must leave).
KNOWN_FAILING: dict[str, str] = {}


def known_failure(item):
    """Why a case is expected to fail still (None: it must pass)."""
    return expected_failure(item, KNOWN_FAILING)


__all__ = ["global_dtype", "global_random_seed"]
