"""scikit-learn's ``cluster/tests/test_k_means.py``, run against StreamingKMeans.

The installed file is read at test time (see ``sklearn_port``); its
``MiniBatchKMeans`` is StreamingKMeans under scikit-learn's spelling
(``max_iter`` is ``max_passes``), in process and without progress bars.
"""

from __future__ import annotations

import pytest
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
NOT_APPLICABLE: dict[str, str] = {
    # scikit-learn draws every mini-batch at random, with replacement, so max_iter
    # passes are max_iter * n_samples // batch_size steps; a streamclust pass visits
    # every row once, in steps of batch_size, so 100 rows in batches of 30 are 4 steps.
    r"test_minibatch_iter_steps": "a pass visits every row once, in ceil(n / batch) steps",
}

# scikit-learn runs these tests with a ConvergenceWarning shown, not raised (its KMeans
# warns of fewer distinct clusters than n_clusters, as StreamingKMeans does).
pytestmark = pytest.mark.filterwarnings("default::sklearn.exceptions.ConvergenceWarning")

port("cluster/tests/test_k_means.py", {"MiniBatchKMeans": SWAPPED}, globals())


def not_applicable(item):
    """Why a collected case does not apply (None: it runs); see ``tests/conftest.py``."""
    return applicability(item, "MiniBatchKMeans", SWAPPED, (KMeans,), NOT_APPLICABLE)


#: Cases that fail still, each with what is missing (strict: a fixed case must leave).
KNOWN_FAILING: dict[str, str] = {}


def known_failure(item):
    """Why a case is expected to fail still (None: it must pass)."""
    return expected_failure(item, KNOWN_FAILING)


__all__ = ["global_dtype", "global_random_seed"]
