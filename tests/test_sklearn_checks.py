"""scikit-learn's estimator checks on StreamingKMeans."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from streamclust import StreamingKMeans

# No expected failures: StreamingKMeans passes every check MiniBatchKMeans passes.
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks(
    [StreamingKMeans(random_state=0, progress=False)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
