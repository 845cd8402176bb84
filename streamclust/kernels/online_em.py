"""Pure NumPy kernels of online (stepwise) EM for StreamingGaussianMixture.

The running state is per-row sufficient statistics around the current means
(:func:`stats_from_params` seeds it from any parameters); each batch moves it
by a decreasing step (Cappe & Moulines, 2009), then the M-step of
:mod:`.gmm` gives the new parameters.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .gmm import Params, Stats, covariances_from_prec_chol, estep_stats, m_step, shift_stats

__all__ = [
    "OnlineArg",
    "OnlineState",
    "block_online",
    "online_step",
    "state_from_arrays",
    "state_to_arrays",
    "stats_from_params",
]


def stats_from_params(p: Params, reg_covar: float) -> Stats:
    """Per-row statistics, around ``p.means``, whose :func:`m_step` gives back ``p``.

    They seed online EM from parameters that were not built from statistics
    (an initialization, a model fitted with ``fit`` or taken from scikit-learn).
    """
    K, d = p.means.shape
    nk = np.exp(p.log_weights)
    nk = nk / nk.sum()
    covs = covariances_from_prec_chol(p.prec_chol, p.cov_type)
    if p.cov_type in ("full", "tied"):
        base = np.broadcast_to(covs, (K, d, d)) - reg_covar * np.eye(d)
        s2 = nk[:, None, None] * base
    else:
        var = np.broadcast_to(covs[:, None] if p.cov_type == "spherical" else covs, (K, d))
        s2 = nk[:, None] * np.maximum(var - reg_covar, 0.0)
    return Stats(nk, np.zeros((K, d)), s2, 0.0, 1)


@dataclass
class OnlineState:
    """Stepwise EM: parameters, running per-row statistics around ``params.means``,
    the running mean log-likelihood and the number of steps taken."""

    params: Params
    stats: Stats
    log_lik: float
    steps: int


def online_step(
    state: OnlineState,
    X: np.ndarray,
    step_offset: float,
    step_decay: float,
    reg_covar: float,
    min_step: float = 0.0,
) -> OnlineState:
    """One stepwise EM update on the rows ``X`` (Cappe & Moulines, 2009).

    The running statistics move towards the batch's per-row statistics by
    ``eta = (steps + 1 + step_offset) ** -step_decay``, never less than
    ``min_step`` (a constant step: old batches then fade geometrically, and the
    model follows a drift), then the M-step runs and the statistics are
    re-centred on the new means.
    """
    p = state.params
    batch = estep_stats(X.astype(np.float64, copy=False), p)
    eta = max((state.steps + 1.0 + step_offset) ** -step_decay, min_step)
    n = batch.n
    old = state.stats
    mixed = Stats(
        (1 - eta) * old.nk + (eta / n) * batch.nk,
        (1 - eta) * old.s1 + (eta / n) * batch.s1,
        (1 - eta) * old.s2 + (eta / n) * batch.s2,
        0.0,
        1,
    )
    new = m_step(mixed, p.means, p.cov_type, reg_covar)
    log_lik = batch.log_lik / n
    if np.isfinite(state.log_lik):  # NaN: no batch seen yet
        log_lik = (1 - eta) * state.log_lik + eta * log_lik
    return OnlineState(new, shift_stats(mixed, p.means - new.means), log_lik, state.steps + 1)


class OnlineArg(NamedTuple):
    """What :func:`block_online` does with one block."""

    batch_size: int
    step_offset: float
    step_decay: float
    reg_covar: float
    min_step: float = 0.0


def block_online(state: OnlineState, block: np.ndarray, start: int, arg: OnlineArg) -> OnlineState:
    """Task: stepwise EM over one block, cut into consecutive batches of about
    ``batch_size`` rows (equal cuts, so no short remainder gets a full step)."""
    batch_size, offset, decay, reg, min_step = arg
    rows = block.shape[0]
    n_batches = max(1, round(rows / batch_size))
    bounds = [rows * i // n_batches for i in range(n_batches + 1)]
    for lo, hi in itertools.pairwise(bounds):
        state = online_step(state, block[lo:hi], offset, decay, reg, min_step)
    return state


def state_to_arrays(state: OnlineState) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The running statistics, steps and log-likelihood as JSON scalars and arrays."""
    scalars = {"online_steps": state.steps, "online_log_lik": state.log_lik}
    arrays = {"online_nk": state.stats.nk, "online_s1": state.stats.s1}
    return scalars, arrays | {"online_s2": state.stats.s2}


def state_from_arrays(
    params: Params, scalars: dict[str, Any], arrays: dict[str, np.ndarray]
) -> OnlineState:
    """The state :func:`state_to_arrays` saved, around ``params``."""
    stats = Stats(arrays["online_nk"], arrays["online_s1"], arrays["online_s2"], 0.0, 1)
    return OnlineState(
        params, stats, float(scalars["online_log_lik"]), int(scalars["online_steps"])
    )
