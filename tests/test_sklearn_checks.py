"""scikit-learn's estimator checks on StreamingKMeans and the streaming mixtures."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from streamclust import (
    StreamingBayesianGaussianMixture,
    StreamingGaussianMixture,
    StreamingKMeans,
)

# Each passes every check its scikit-learn twin (MiniBatchKMeans, GaussianMixture)
# passes; scikit-learn expects the same failure of MiniBatchKMeans: mini-batches of
# weighted rows are not the mini-batches of repeated rows.
EXPECTED_FAILED: dict[str, dict[str, str]] = {
    "StreamingKMeans": {
        "check_sample_weight_equivalence_on_dense_data": (
            "sample_weight is not equivalent to removing/repeating samples."
        ),
        "check_sample_weight_equivalence_on_sparse_data": (
            "sample_weight is not equivalent to removing/repeating samples."
        ),
    },
}


# StreamingKMeans warns, as KMeans does, when fewer clusters than n_clusters hold a
# row; the checks' tiny data of repeated points do that. scikit-learn runs these
# checks with a ConvergenceWarning shown, not raised, and so do we.
@pytest.mark.filterwarnings("default::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [
        StreamingKMeans(random_state=0, progress=False),
        StreamingGaussianMixture(random_state=0, progress=False),
        StreamingBayesianGaussianMixture(random_state=0, progress=False),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED.get(type(est).__name__, {}),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
