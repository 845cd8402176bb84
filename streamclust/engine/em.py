"""Exact EM out of core: block sufficient statistics summed in block order, the
M-step on the driver, and every candidate iterating in lockstep over one pass.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from .. import runtime
from ..kernels import gmm as G
from ..kernels import online_em as O
from ..persistence import FitCheckpoint
from ..sources import Source
from .plan import block_ranges

__all__ = [
    "GaussianSteps",
    "EMCheckpoint",
    "EMProgress",
    "EMResult",
    "EMSettings",
    "fit_em",
    "online_em_pass",
    "run_em",
    "sum_stats",
]


def sum_stats(
    fn: Any,
    source: Source,
    *args: Any,
    runner: runtime.Runner,
    batch_size: int,
    desc: str,
    progress: bool,
    start: int = 0,
    total: list[Any] | None = None,
    on_block: Any = None,
) -> list[Any]:
    """Run the task ``fn`` over every logical block (of ``batch_size``) and add its
    per-candidate statistics in block order (None: a candidate the task skipped),
    with a progress bar.

    ``total`` holds the sums of the first ``start`` blocks (a resumed pass);
    ``on_block(blocks, total)`` is called after each block is added.
    """
    total = [] if total is None else total
    ranges = block_ranges(source, batch_size)[start:]
    with runtime.progress_bar(sum(hi - lo for lo, hi in ranges), desc, progress) as bar:
        parts = runtime.map_blocks(
            fn, source, *args, runner=runner, ranges=ranges, progress=bar.update
        )
        for i, part in enumerate(parts, start + 1):
            if not total:
                total = list(part)
            else:
                for c, st in enumerate(part):
                    if st is not None:
                        total[c] += st
            if on_block is not None:
                on_block(i, total)
    return total


@dataclass(frozen=True)
class GaussianSteps:
    """The steps of maximum-likelihood EM (see ``VariationalSteps`` for the other):
    the candidate is its own E-step mixture, the M-step is scikit-learn's, and the
    lower bound is the mean log-likelihood of the E-step."""

    reg_covar: float
    entropy: bool = False  # the E-step need not sum r log r

    def estep(self, p: G.Params) -> G.Params:
        return p

    def mstep(self, st: G.Stats, p: G.Params) -> G.Params:
        return G.m_step(st, p.means, p.cov_type, self.reg_covar)

    def bound(self, st: G.Stats, p: G.Params) -> float:
        return st.log_lik / st.n

    def to_arrays(self, p: G.Params) -> dict[str, np.ndarray]:
        return {"log_weights": p.log_weights, "means": p.means, "prec_chol": p.prec_chol}

    def from_arrays(self, a: Any, cov_type: str) -> G.Params:
        return G.Params(a["log_weights"], a["means"], a["prec_chol"], cov_type)


@dataclass(frozen=True)
class EMSettings:
    """When exact EM stops, how covariances are regularized, and which EM runs
    (``steps``: None is maximum likelihood, :class:`GaussianSteps`)."""

    tol: float = 1e-3
    max_iter: int = 100
    reg_covar: float = 1e-6
    batch_size: int = 4096  # sizes the logical blocks of every pass
    progress: bool = True
    verbose: int = 0  # scikit-learn's progress lines
    verbose_interval: int = 10
    steps: Any = None

    def em_steps(self) -> Any:
        """The steps of this EM."""
        return GaussianSteps(self.reg_covar) if self.steps is None else self.steps


@dataclass
class EMProgress:
    """Where exact EM is: every candidate's parameters (a Gaussian mixture, or a
    variational posterior), lower bound, iterations and convergence, the iteration
    under way and the sums of its first ``blocks``."""

    active: list[Any]
    lower: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    it: int = 1
    blocks: int = 0
    partial: list[G.Stats | None] = field(default_factory=list)
    #: Every candidate's lower bound after each of its iterations.
    history: list[list[float]] = field(default_factory=list)

    @classmethod
    def start(cls, candidates: list[Any], lower: float = -np.inf) -> EMProgress:
        """Progress before the first iteration; ``lower`` is the bound the first
        iteration's is compared with (a warm start's: the previous fit's)."""
        n = len(candidates)
        return cls(
            list(candidates),
            np.full(n, lower),
            np.zeros(n, int),
            np.zeros(n, bool),
            history=[[] for _ in range(n)],
        )


class EMResult(NamedTuple):
    """Every candidate's final parameters, lower bound (mean log-likelihood of the last
    E-step), iterations, convergence and lower bound after every iteration."""

    params: list[Any]
    lower: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    history: list[list[float]]


class EMCheckpoint(FitCheckpoint):
    """The progress of one exact EM fit in ``DIR/gmm-fit.npz`` (the candidates'
    arrays as ``steps`` names them)."""

    def __init__(self, directory: Any, fingerprint: dict[str, Any], steps: Any = None) -> None:
        super().__init__(directory, "gmm-fit.npz", fingerprint)
        self.steps = GaussianSteps(0.0) if steps is None else steps

    def save_progress(self, done: EMProgress) -> None:
        arrays = {"lower": done.lower, "n_iter": done.n_iter, "converged": done.converged}
        for c, p in enumerate(done.active):
            arrays |= {f"p{c}_{k}": v for k, v in self.steps.to_arrays(p).items()}
        sums: list[list[Any] | None] = []
        for c, st in enumerate(done.partial):
            sums.append(None if st is None else [st.log_lik, st.n, st.r_log_r])
            if st is not None:
                arrays |= {f"s{c}_nk": st.nk, f"s{c}_s1": st.s1, f"s{c}_s2": st.s2}
        meta = {
            "it": done.it,
            "blocks": done.blocks,
            "cov_types": [p.cov_type for p in done.active],
            "sums": sums,
            "history": done.history,
        }
        self.save(meta, arrays)

    def load_progress(self) -> EMProgress | None:
        saved = self.load()
        if saved is None:
            return None
        meta, a = saved
        active = []
        for c, ct in enumerate(meta["cov_types"]):
            mine = {k.split("_", 1)[1]: v for k, v in a.items() if k.startswith(f"p{c}_")}
            active.append(self.steps.from_arrays(mine, ct))
        partial = [
            None
            if sums is None
            else G.Stats(
                a[f"s{c}_nk"], a[f"s{c}_s1"], a[f"s{c}_s2"], float(sums[0]), int(sums[1]), *sums[2:]
            )
            for c, sums in enumerate(meta["sums"])
        ]
        lower, n_iter, converged = a["lower"], a["n_iter"], a["converged"]
        history = meta.get("history") or [[] for _ in active]
        return EMProgress(
            active, lower, n_iter, converged, meta["it"], meta["blocks"], partial, history
        )


def _save_block(
    checkpoint: EMCheckpoint, at: EMProgress, blocks: int, total: list[G.Stats | None]
) -> None:
    checkpoint.save_progress(replace(at, blocks=blocks, partial=total))


def online_em_pass(
    state: O.OnlineState,
    source: Source,
    runner: runtime.Runner,
    arg: O.OnlineArg,
    progress: bool = True,
) -> O.OnlineState:
    """Online EM over every row of ``source`` once, in row order, on its logical
    blocks of ``arg.batch_size`` (steps of about that many rows)."""
    steps = [(lo, hi, arg) for lo, hi in block_ranges(source, arg.batch_size)]
    with runtime.progress_bar(source.n_rows, "online EM", progress) as bar:
        return runtime.scan(
            O.block_online, source, [state], steps, runner=runner, progress=bar.update
        )[0]


def fit_em(
    start: Callable[[], list[Any]],
    source: Source,
    runner: runtime.Runner,
    settings: EMSettings,
    checkpoint: EMCheckpoint | None = None,
    lower: float = -np.inf,
) -> EMResult:
    """Exact EM from the candidates ``start()`` gives, or from where the fit that
    wrote ``checkpoint`` stopped (then ``start`` is not called). ``lower``: the lower
    bound the first iteration is compared with (a warm start carries the last one, as
    scikit-learn does, so that one iteration per fit still converges)."""
    done = None if checkpoint is None else checkpoint.load_progress()
    if done is None:
        done = EMProgress.start(start(), lower)
        if checkpoint is not None:
            checkpoint.save_progress(done)
    return run_em(done, source, runner, settings, checkpoint)


def run_em(
    start: list[Any] | EMProgress,
    source: Source,
    runner: runtime.Runner,
    settings: EMSettings,
    checkpoint: EMCheckpoint | None = None,
) -> EMResult:
    """Exact EM for every candidate in lockstep: one pass per iteration serves all
    candidates still iterating (of any size and covariance type).

    ``start`` may be the progress of an interrupted fit, which goes on from
    there; ``checkpoint`` saves the progress after every block.
    """
    done = start if isinstance(start, EMProgress) else EMProgress.start(start)
    active, lower, n_iter, converged = done.active, done.lower, done.n_iter, done.converged
    history = done.history or [[] for _ in active]
    n = len(active)
    report = _Report(settings, n)
    steps = settings.em_steps()
    while done.it <= settings.max_iter and not converged.all():
        it = done.it
        params = [None if converged[c] else steps.estep(active[c]) for c in range(n)]
        on_block = None
        if checkpoint is not None:
            on_block = functools.partial(_save_block, checkpoint, done)
        stats = sum_stats(
            G.block_estep,
            source,
            params,
            steps.entropy,
            runner=runner,
            batch_size=settings.batch_size,
            desc=f"EM {it}",
            progress=settings.progress,
            start=done.blocks,
            total=done.partial,
            on_block=on_block,
        )
        for c, st in enumerate(stats):
            if st is None or converged[c]:
                continue
            prev = lower[c]
            active[c] = steps.mstep(st, active[c])
            lower[c] = steps.bound(st, active[c])
            n_iter[c] = it
            history[c].append(float(lower[c]))
            if abs(lower[c] - prev) < settings.tol:
                converged[c] = True
            report.iteration(c, it, lower[c] - prev)
        done = EMProgress(active, lower, n_iter, converged, it + 1, history=history)
        if checkpoint is not None:
            checkpoint.save_progress(done)
    report.end(converged, lower)
    return EMResult(active, lower, n_iter, converged, history)


class _Report:
    """scikit-learn's progress lines of EM (``verbose``), for candidates in lockstep."""

    def __init__(self, settings: EMSettings, n: int) -> None:
        self.level, self.every, self.n = settings.verbose, settings.verbose_interval, n
        self.clock = [time.perf_counter()] * n
        self.began = list(self.clock)
        for c in range(n if self.level else 0):
            print(f"Initialization {c}")

    def iteration(self, c: int, it: int, change: float) -> None:
        if not self.level or it % self.every:
            return
        now = time.perf_counter()
        if self.level >= 2:
            lapse = now - self.clock[c]
            print(f"  Iteration {it}\t time lapse {lapse:.5f}s\t ll change {change:.5f}")
        else:
            print(f"  Iteration {it}")
        self.clock[c] = now

    def end(self, converged: np.ndarray, lower: np.ndarray) -> None:
        for c in range(self.n if self.level else 0):
            word = "converged" if converged[c] else "did not converge"
            if self.level >= 2:
                lapse = time.perf_counter() - self.began[c]
                print(
                    f"Initialization {word}. time lapse {lapse:.5f}s\t lower bound {lower[c]:.5f}."
                )
            else:
                print(f"Initialization {word}.")
