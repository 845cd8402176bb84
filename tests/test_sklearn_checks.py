"""scikit-learn's estimator checks on StreamingKMeans and StreamingGaussianMixture."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from streamclust import StreamingGaussianMixture, StreamingKMeans

# No expected failures: each passes every check its scikit-learn twin
# (MiniBatchKMeans, GaussianMixture) passes.
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks(
    [
        StreamingKMeans(random_state=0, progress=False),
        StreamingGaussianMixture(random_state=0, progress=False),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
