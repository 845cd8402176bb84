"""scikit-learn's ``mixture/tests/test_gaussian_mixture.py``, run against
StreamingGaussianMixture.

The installed file is read at test time (see ``sklearn_port``); its
``GaussianMixture`` is StreamingGaussianMixture, in process and without
progress bars. Its array-API cases (dispatch to other array libraries) are out
of scope and deselected.
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

from streamclust import StreamingGaussianMixture

SWAPPED = sklearn_spelling(
    StreamingGaussianMixture, "GaussianMixture", {}, client="sync", progress=False
)

#: Cases that exercise GaussianMixture but not behaviour streamclust shares, and why.
NOT_APPLICABLE: dict[str, str] = {
    # Its precisions_init is ordered by the labels of scikit-learn's own KMeans
    # (n_init=1, random_state=0); the "kmeans" initialization here numbers the same
    # components in another order, so the fit from precisions_init starts mismatched.
    r"test_gaussian_mixture_precisions_init_diag.*": (
        "precisions_init ordered by scikit-learn's KMeans labels"
    ),
    # It patches a private function of scikit-learn's module.
    r"test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "patches scikit-learn's private functions"
    ),
    # scikit-learn's range message swaps them ("max value" is the minimum); ours
    # names each value for what it is.
    r"test_check_weights": "matches a message that calls the minimum 'max value'",
}

#: Dispatch to other array libraries through the array API: out of scope, not collected.
ARRAY_API = (
    "test_gaussian_mixture_array_api_compliance",
    "test_gaussian_mixture_raises_where_array_api_not_implemented",
)

# scikit-learn runs these tests with a ConvergenceWarning shown, not raised.
pytestmark = pytest.mark.filterwarnings("default::sklearn.exceptions.ConvergenceWarning")

port("mixture/tests/test_gaussian_mixture.py", {"GaussianMixture": SWAPPED}, globals(), ARRAY_API)


def not_applicable(item):
    """Why a collected case does not apply (None: it runs); see ``tests/conftest.py``."""
    return applicability(item, "GaussianMixture", SWAPPED, (), NOT_APPLICABLE)


#: Cases that fail still, each with what is missing (strict: a fixed case must leave).
KNOWN_FAILING: dict[str, str] = {}


def known_failure(item):
    """Why a case is expected to fail still (None: it must pass)."""
    return expected_failure(item, KNOWN_FAILING)


__all__ = ["global_dtype", "global_random_seed"]
