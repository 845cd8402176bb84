"""A chain: K-Means candidates that advance in lockstep, their state and when they stop.

Pure NumPy, no Dask. A chain's state travels with its tasks and back (so a
retried task starts from the same state); :func:`chain_to_state` and
:func:`chain_from_state` give it to saved models and checkpoints.

Early stopping follows scikit-learn's ``MiniBatchKMeans``, per candidate: an
exponentially weighted average (EWA) of the batch inertia per row, and a
candidate stops when the EWA has not improved for ``max_no_improvement``
steps, or when one step moved its centers by at most ``tol`` (squared, summed).
A stopped candidate keeps its centers and counts, but its batch inertias are
still recorded, so every candidate is scored on the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Chain",
    "Forgetting",
    "StopRule",
    "chain_from_state",
    "chain_to_state",
    "merge_chains",
    "new_chain",
    "split_chain",
    "track_convergence",
]


class Forgetting(NamedTuple):
    """How a chain forgets, as Spark MLlib's streaming K-Means: before every step the
    centers' counts are multiplied by ``factor`` (``per_row``: by ``factor`` to the
    power of the step's rows), so old rows weigh less and centers follow a drift."""

    factor: float
    per_row: bool = False

    def step_factor(self, rows: int) -> float:
        return self.factor**rows if self.per_row else self.factor


class StopRule(NamedTuple):
    """When a candidate stops: ``tol`` (absolute: the relative ``tol`` times the mean
    feature variance), ``max_no_improvement`` (None: never for lack of improvement),
    the EWA's weight ``alpha`` of a new batch, and ``batch_size`` (the per-row scale)."""

    tol: float
    max_no_improvement: int | None
    alpha: float
    batch_size: int


@dataclass
class Chain:
    """State of ``g`` candidates with ``k`` centers of ``d`` features.

    centers : (g, k, d) array in the data dtype
    counts : (g, k) float64, rows (or weight) absorbed per center (learning rate 1/count)
    since_reassign : (g,) int64, rows seen since the last low-count reassignment
    rng_states : per-candidate ``numpy.random.PCG64`` states (for reassignment draws)
    recent : (g, last_n) float64 ring of the latest batch inertias
    n_recorded : number of batch inertias recorded so far (ring position)
    stop : the early-stopping rule, or None (every candidate runs every step)
    ewa, ewa_min : (g,) float64, each candidate's EWA of the batch inertia per row, and
        its lowest value (NaN until set)
    no_improvement : (g,) int64, steps since the EWA last reached a new minimum
    stopped_at : (g,) int64, the step after which each candidate stopped (0: running)
    forget : how old rows lose weight, or None (they never do)
    log : progress lines (``verbose``) for the driver to print, not saved
    """

    centers: np.ndarray
    counts: np.ndarray
    since_reassign: np.ndarray
    rng_states: list[dict[str, Any]]
    recent: np.ndarray
    n_recorded: int = 0
    steps: int = 0
    candidates: tuple[int, ...] = field(default_factory=tuple)
    stop: StopRule | None = None
    ewa: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ewa_min: np.ndarray = field(default_factory=lambda: np.zeros(0))
    no_improvement: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    stopped_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    forget: Forgetting | None = None
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        g = self.centers.shape[0]
        if len(self.ewa) != g:
            self.ewa = np.full(g, np.nan)
            self.ewa_min = np.full(g, np.nan)
            self.no_improvement = np.zeros(g, np.int64)
            self.stopped_at = np.zeros(g, np.int64)

    @property
    def stopped(self) -> np.ndarray:
        """(g,) bool: the candidates that have stopped."""
        return self.stopped_at > 0

    def copy(self) -> Chain:
        return replace(
            self,
            centers=self.centers.copy(),
            counts=self.counts.copy(),
            since_reassign=self.since_reassign.copy(),
            rng_states=[dict(s, state=dict(s["state"])) for s in self.rng_states],
            recent=self.recent.copy(),
            ewa=self.ewa.copy(),
            ewa_min=self.ewa_min.copy(),
            no_improvement=self.no_improvement.copy(),
            stopped_at=self.stopped_at.copy(),
            log=list(self.log),
        )

    def window_scores(self) -> np.ndarray:
        """Sum of each candidate's last ``min(n_recorded, last_n)`` batch inertias."""
        n = min(self.n_recorded, self.recent.shape[1])
        return self.recent[:, :n].sum(axis=1)


#: The per-candidate arrays of a chain, in the order they are stacked and saved.
_PER_CANDIDATE = (
    "centers",
    "counts",
    "since_reassign",
    "recent",
    "ewa",
    "ewa_min",
    "no_improvement",
    "stopped_at",
)


def new_chain(
    centers: np.ndarray,
    rng_states: list[dict[str, Any]],
    last_n: int,
    candidates: tuple[int, ...],
    forget: Forgetting | None = None,
) -> Chain:
    g, k, _ = centers.shape
    return Chain(
        centers=centers,
        counts=np.zeros((g, k), np.float64),
        since_reassign=np.zeros(g, np.int64),
        rng_states=rng_states,
        recent=np.zeros((g, last_n), np.float64),
        candidates=candidates,
        forget=forget,
    )


def chain_to_state(chain: Chain) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """JSON scalars and arrays that describe ``chain`` (for saved models and checkpoints)."""
    scalars = {
        "state_n_recorded": int(chain.n_recorded),
        "state_steps": int(chain.steps),
        "state_rng": chain.rng_states,
        "state_candidates": list(chain.candidates),
        "state_stop": None if chain.stop is None else list(chain.stop),
        "state_forget": None if chain.forget is None else list(chain.forget),
    }
    arrays = {f"state_{name}": getattr(chain, name) for name in _PER_CANDIDATE}
    return scalars, arrays


def chain_from_state(scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> Chain:
    """The inverse of :func:`chain_to_state` (states saved before early stopping existed
    load as chains that never stop)."""
    centers = arrays["state_centers"]
    candidates = scalars.get("state_candidates", range(centers.shape[0]))
    stop = scalars.get("state_stop")
    forget = scalars.get("state_forget")
    chain = Chain(
        centers=centers,
        counts=arrays["state_counts"],
        since_reassign=arrays["state_since_reassign"],
        rng_states=list(scalars["state_rng"]),
        recent=arrays["state_recent"],
        n_recorded=int(scalars["state_n_recorded"]),
        steps=int(scalars["state_steps"]),
        candidates=tuple(int(c) for c in candidates),
        stop=None if stop is None else StopRule(float(stop[0]), stop[1], *stop[2:]),
        forget=None if forget is None else Forgetting(float(forget[0]), bool(forget[1])),
    )
    for name in _PER_CANDIDATE[4:]:
        if f"state_{name}" in arrays:
            setattr(chain, name, arrays[f"state_{name}"])
    return chain


def merge_chains(chains: list[Chain]) -> Chain:
    """The chain whose candidates are those of ``chains``, ordered by candidate index."""
    order = np.argsort(np.concatenate([c.candidates for c in chains]))
    rng_states = [s for c in chains for s in c.rng_states]
    stacked = {
        name: np.concatenate([getattr(c, name) for c in chains])[order] for name in _PER_CANDIDATE
    }
    return Chain(
        **stacked,
        rng_states=[rng_states[i] for i in order],
        n_recorded=chains[0].n_recorded,
        steps=max(c.steps for c in chains),
        candidates=tuple(range(len(order))),
        stop=chains[0].stop,
        forget=chains[0].forget,
        log=[line for c in chains for line in c.log],
    )


def split_chain(chain: Chain, n_groups: int) -> list[Chain]:
    """Split a chain's candidates into ``n_groups`` chains (contiguous, in order)."""
    return [
        replace(
            chain,
            **{name: getattr(chain, name)[g].copy() for name in _PER_CANDIDATE},
            rng_states=[chain.rng_states[i] for i in g],
            candidates=tuple(chain.candidates[i] for i in g),
            log=[],
        )
        for g in np.array_split(np.arange(chain.centers.shape[0]), n_groups)
    ]


def track_convergence(
    chain: Chain,
    batch_inertia: np.ndarray,
    moved: np.ndarray | None,
    active: np.ndarray,
    total: int | None,
    verbose: bool,
) -> None:
    """After step ``chain.steps`` (counted from 0): update the EWA of the ``active``
    candidates from their ``batch_inertia`` (g,), and stop those that converged
    (``moved``: each candidate's summed squared center change, when ``tol`` > 0).

    The first step of a fit is not counted (its inertia is the initialization's),
    as in scikit-learn. With ``verbose``, scikit-learn's progress lines go to
    ``chain.log``."""
    rule = chain.stop
    step = chain.steps + 1
    of = f"{step}/{total}" if total else f"{step}"
    per_row = batch_inertia / (rule.batch_size if rule is not None else 1)
    for i in np.flatnonzero(active):
        who = f" (init {chain.candidates[i] + 1})" if len(chain.candidates) > 1 else ""
        if rule is None or step == 1:
            if verbose:
                chain.log.append(f"Minibatch step {of}{who}: mean batch inertia: {per_row[i]}")
            continue
        first = np.isnan(chain.ewa[i])
        a = rule.alpha
        chain.ewa[i] = per_row[i] if first else chain.ewa[i] * (1 - a) + per_row[i] * a
        if verbose:
            chain.log.append(
                f"Minibatch step {of}{who}: mean batch inertia: {per_row[i]}, "
                f"ewa inertia: {chain.ewa[i]}"
            )
        if rule.tol > 0 and moved is not None and moved[i] <= rule.tol:
            chain.stopped_at[i] = step
            if verbose:
                chain.log.append(f"Converged (small centers change) at step {of}{who}")
            continue
        if np.isnan(chain.ewa_min[i]) or chain.ewa[i] < chain.ewa_min[i]:
            chain.no_improvement[i] = 0
            chain.ewa_min[i] = chain.ewa[i]
        else:
            chain.no_improvement[i] += 1
        limit = rule.max_no_improvement
        if limit is not None and chain.no_improvement[i] >= limit:
            chain.stopped_at[i] = step
            if verbose:
                chain.log.append(f"Converged (lack of improvement in inertia) at step {of}{who}")
