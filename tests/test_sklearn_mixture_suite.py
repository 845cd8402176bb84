"""scikit-learn's ``mixture/tests/test_gaussian_mixture.py``, run against
StreamingGaussianMixture.

The installed file is read at test time (see ``sklearn_port``); its
``GaussianMixture`` is StreamingGaussianMixture, in process and without
progress bars. Its array-API cases (dispatch to other array libraries) are out
of scope and deselected.
"""

from __future__ import annotations

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
NOT_APPLICABLE: dict[str, str] = {}

#: Dispatch to other array libraries through the array API: out of scope, not collected.
ARRAY_API = (
    "test_gaussian_mixture_array_api_compliance",
    "test_gaussian_mixture_raises_where_array_api_not_implemented",
)

port("mixture/tests/test_gaussian_mixture.py", {"GaussianMixture": SWAPPED}, globals(), ARRAY_API)


def not_applicable(item):
    """Why a collected case does not apply (None: it runs); see ``tests/conftest.py``."""
    return applicability(item, "GaussianMixture", SWAPPED, (), NOT_APPLICABLE)


#: Cases that fail still, each with what is missing (strict: a fixed case must leave).
KNOWN_FAILING: dict[str, str] = {
    r".*float32.*": "float32 dtype preservation",
    r"test_check_weights|test_regularisation|test_gaussian_mixture_fit_convergence_warning": (
        "scikit-learn's message fragments"
    ),
    r"test_gaussian_mixture_setting_best_params": "convergence warning fragments",
    r"test_gaussian_mixture_(n_parameters|aic_bic)": "_n_parameters",
    r"test_gaussian_mixture_verbose": "verbose",
    r"test_init_means_not_duplicated.*|test_max_iter_zero": "max_iter=0",
    r"test_means_for_all_inits.*random_from_data.*": "init_params='random_from_data'",
    r"test_gaussian_mixture_precisions_init.*": "_set_parameters",
    r"test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": "private patching",
}


def known_failure(item):
    """Why a case is expected to fail still (None: it must pass)."""
    return expected_failure(item, KNOWN_FAILING)


__all__ = ["global_dtype", "global_random_seed"]
