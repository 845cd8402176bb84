"""The NumPy kernels of StreamingKMeans against brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus

from streamclust.kernels import kmeans as K
from streamclust.kernels import seeding
from streamclust.kernels.online_em import stats_from_params


def _brute_labels(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(b, g) labels by float64 direct differences and argmin."""
    X64, C64 = X.astype(np.float64), centers.astype(np.float64)
    d = ((X64[:, None, None, :] - C64[None]) ** 2).sum(-1)
    return d.argmin(axis=2)


@pytest.mark.parametrize(
    ("b", "g", "k", "d"), [(1000, 3, 8, 2), (5000, 10, 64, 32), (777, 2, 300, 5), (3, 1, 1, 4)]
)
def test_assign_matches_brute_force(b, g, k, d):
    rng = np.random.default_rng(b + k)
    X = rng.standard_normal((b, d)).astype(np.float32)
    C = rng.standard_normal((g, k, d)).astype(np.float32)
    labels, dist = K.assign(X, C)
    ref = _brute_labels(X, C)
    # The GEMM identity in float32 may flip near-ties only.
    assert (labels == ref).mean() > 0.999
    exact = ((X[:, None, :].astype(np.float64) - C[np.arange(g), labels]) ** 2).sum(-1)
    np.testing.assert_allclose(dist.T, exact, rtol=1e-4, atol=1e-4)


def test_assign_ties_go_to_the_lowest_index_and_candidates_are_independent():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    C = rng.standard_normal((4, 300, 4)).astype(np.float32)  # k > 255: 16-bit weights
    C[:, 200] = C[:, 7]  # exact duplicates
    C[:, 299] = C[:, 7]
    labels, _ = K.assign(X, C)
    assert not np.isin(labels, [200, 299]).any()
    assert (labels == 7).any()
    # A candidate's labels do not depend on the others stacked with it.
    for c in range(4):
        np.testing.assert_array_equal(K.assign(X, C[c : c + 1])[0][:, 0], labels[:, c])
    # A constant data set: every distance ties, every row goes to center 0.
    same = np.repeat(C[:, :1], 300, axis=1)
    assert (K.assign(X, same)[0] == 0).all()


def test_kmeans_plusplus_lockstep():
    rng = np.random.default_rng(1)
    means = rng.standard_normal((20, 6)) * 8
    pool = (means[rng.integers(20, size=4000)] + rng.standard_normal((4000, 6))).astype(np.float32)
    seeds = [11, 22, 33, 44, 55, 66]
    stacked = seeding.kmeans_plusplus(pool, 20, seeds)
    assert stacked.shape == (6, 20, 6) and stacked.dtype == np.float32
    # Candidate i depends only on seeds[i], not on the candidates beside it.
    np.testing.assert_array_equal(seeding.kmeans_plusplus(pool, 20, [33])[0], stacked[2])
    # Centers are distinct rows of the pool.
    for cand in stacked:
        assert len({tuple(r) for r in cand}) == 20
        assert all((pool == r).all(axis=1).any() for r in cand)

    def potential(c: np.ndarray) -> float:
        return float(((pool[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum())

    ours = np.mean([potential(c) for c in stacked])
    ref = np.mean(
        [potential(kmeans_plusplus(pool.astype(np.float64), 20, random_state=s)[0]) for s in seeds]
    )
    # Same algorithm, other random draws: the same quality on average.
    assert ours < 1.1 * ref


# --------------------------------------------------------------------------- mixture kernels


def _random_mixture(cov_type: str, K: int, d: int, offset: float, seed: int):
    from streamclust.kernels import gmm as G

    rng = np.random.default_rng(seed)
    means = offset + rng.uniform(-3, 3, (K, d))
    A = rng.normal(size=(K, d, d)) * 0.4
    covs = np.einsum("kij,klj->kil", A, A) + 0.2 * np.eye(d)
    covs = {
        "full": covs,
        "tied": covs[0],
        "diag": np.diagonal(covs, axis1=1, axis2=2).copy(),
        "spherical": np.diagonal(covs, axis1=1, axis2=2).mean(axis=1),
    }[cov_type]
    log_w = np.log(rng.dirichlet(np.ones(K)))
    return G.Params(log_w, means, G.precision_cholesky(covs, cov_type), cov_type), covs


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_mixture_estep_matches_direct_formulas(cov_type, offset):
    """Densities, log-likelihood and shifted statistics equal their textbook formulas
    in float64, also for data far from the origin (no cancellation)."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    from streamclust.kernels import gmm as G

    K, d, n = 5, 6, 5000  # n spans several chunks
    p, covs = _random_mixture(cov_type, K, d, offset, seed=K + d)
    rng = np.random.default_rng(1)
    X = offset + rng.uniform(-4, 4, (n, d))
    full = {
        "full": covs,
        "tied": np.repeat(covs[None], K, 0),
        "diag": np.stack([np.diag(c) for c in covs]) if cov_type == "diag" else None,
        "spherical": np.stack([c * np.eye(d) for c in covs]) if cov_type == "spherical" else None,
    }[cov_type]
    logp = np.stack([multivariate_normal(p.means[k], full[k]).logpdf(X) for k in range(K)], axis=1)
    weighted = logp + p.log_weights
    norm = logsumexp(weighted, axis=1)
    resp = np.exp(weighted - norm[:, None])
    np.testing.assert_allclose(G.log_gaussian_prob(X, p), logp, rtol=1e-9)
    np.testing.assert_allclose(G.log_density(X, p), norm, rtol=1e-9)
    st = G.estep_stats(X, p)
    diff = X[:, None, :] - p.means[None]  # (n, K, d), exact at any offset
    np.testing.assert_allclose(st.nk, resp.sum(0), rtol=1e-9)
    np.testing.assert_allclose(st.s1, np.einsum("nk,nkd->kd", resp, diff), rtol=1e-7, atol=1e-7)
    if cov_type in ("full", "tied"):
        s2 = np.einsum("nk,nkd,nke->kde", resp, diff, diff)
    else:
        s2 = np.einsum("nk,nkd->kd", resp, diff**2)
    np.testing.assert_allclose(st.s2, s2, rtol=1e-8)
    assert st.log_lik == pytest.approx(norm.sum(), rel=1e-12)


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_online_statistics_round_trip(cov_type):
    """stats_from_params inverts the M-step, and shifting statistics moves their centre."""
    from streamclust.kernels import gmm as G

    p, _ = _random_mixture(cov_type, 4, 3, 0.0, seed=2)
    back = G.m_step(stats_from_params(p, 1e-6), p.means, cov_type, 1e-6)
    np.testing.assert_allclose(back.prec_chol, p.prec_chol, rtol=1e-9)
    np.testing.assert_allclose(np.exp(back.log_weights), np.exp(p.log_weights), rtol=1e-12)
    X = np.random.default_rng(0).normal(size=(400, 3))
    st = G.estep_stats(X, p)
    delta = np.random.default_rng(1).normal(size=p.means.shape)
    moved = G.estep_stats(X, G.Params(p.log_weights, p.means - delta, p.prec_chol, cov_type))
    # Responsibilities differ with the means, so compare with fixed ones.
    resp = np.exp(G.log_resp(X, p)[1])
    here = G.estep_stats(X, p, resp)
    there = G.estep_stats(X, G.Params(p.log_weights, p.means - delta, p.prec_chol, cov_type), resp)
    shifted = G.shift_stats(here, delta)
    np.testing.assert_allclose(shifted.s1, there.s1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shifted.s2, there.s2, rtol=1e-9, atol=1e-9)
    assert st.n == moved.n == 400


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_estep_sums_r_log_r_on_every_path(cov_type):
    """``sum r log r`` (the variational bound's term) from the whitened and the
    direct E-step, against the responsibilities written out."""
    from streamclust.kernels import gmm as G

    rng = np.random.default_rng(3)
    X = rng.normal(size=(700, 3)) + 50.0
    covs = {
        "full": np.stack([np.eye(3) * s for s in (0.5, 1.0, 2.0)]),
        "tied": np.eye(3) * 1.5,
        "diag": rng.uniform(0.5, 2.0, size=(3, 3)),
        "spherical": np.array([0.5, 1.0, 2.0]),
    }[cov_type]
    p = G.Params(
        np.log([0.2, 0.3, 0.5]),
        X[:3].copy(),
        G.precision_cholesky(covs, cov_type),
        cov_type,
    )
    st = G.estep_stats(X, p, entropy=True)
    log_r = G.log_resp(X, p)[1]
    want = float(np.sum(np.exp(log_r) * log_r))
    assert st.r_log_r == pytest.approx(want, rel=1e-10)
    assert G.estep_stats(X, p).r_log_r == 0.0  # only when asked


def test_moments_merge_exactly_in_any_split():
    from streamclust.kernels import variational as V

    X = np.random.default_rng(4).normal(size=(1_003, 4)) * 3 + 1e4
    total = V.block_moments(X[:17], 0)[0]
    for lo, hi in ((17, 400), (400, 401), (401, 1_003)):
        total += V.block_moments(X[lo:hi], lo)[0]
    np.testing.assert_allclose(total.mean, X.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(total.covariance(), np.cov(X.T), rtol=1e-9)
