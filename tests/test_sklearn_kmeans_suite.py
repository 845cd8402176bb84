"""scikit-learn's ``cluster/tests/test_k_means.py``, run against StreamingKMeans.

The installed file is read at test time (see ``sklearn_port``); its
``MiniBatchKMeans`` is StreamingKMeans under scikit-learn's spelling
(``max_iter`` is ``max_passes``), in process and without progress bars.
"""

from __future__ import annotations

from sklearn.cluster import KMeans
from sklearn_port import (
    applicability,
    expected_failure,
    global_dtype,
    global_random_seed,
    port,
    sklearn_spelling,
)

from streamclust import StreamingKMeans

SWAPPED = sklearn_spelling(
    StreamingKMeans,
    "MiniBatchKMeans",
    {"max_iter": "max_passes"},
    client="sync",
    progress=False,
)

#: Cases that exercise MiniBatchKMeans but not behaviour streamclust shares, and why.
NOT_APPLICABLE: dict[str, str] = {}

port("cluster/tests/test_k_means.py", {"MiniBatchKMeans": SWAPPED}, globals())


def not_applicable(item):
    """Why a collected case does not apply (None: it runs); see ``tests/conftest.py``."""
    return applicability(item, "MiniBatchKMeans", SWAPPED, (KMeans,), NOT_APPLICABLE)


#: Cases that fail still, each with what is missing (strict: a fixed case must leave).
KNOWN_FAILING: dict[str, str] = {
    r".*(sparse|X_csr).*": "sparse input",
    r"test_minibatch_(kmeans_verbose|with_many_reassignments)": "verbose",
    r"test_minibatch_declared_convergence.*|test_minibatch_iter_steps": "early stopping",
}


def known_failure(item):
    """Why a case is expected to fail still (None: it must pass)."""
    return expected_failure(item, KNOWN_FAILING)


__all__ = ["global_dtype", "global_random_seed"]
