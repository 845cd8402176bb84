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
from ..exceptions import DataError, ParameterError
from ..kernels import gmm as G
from ..kernels import online_em as O
from ..kernels.seeding import kmeans_plusplus, random_rows
from ..persistence import FitCheckpoint, fingerprint
from ..sources import Source
from .chains import ChainSpec, KMeansCheckpoint, fit_kmeans_chains, init_pool
from .plan import BatchPlan, block_ranges

__all__ = [
    "EMCheckpoint",
    "EMProgress",
    "EMResult",
    "EMSettings",
    "fit_em",
    "online_em_pass",
    "MixtureInit",
    "initial_candidates",
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
class MixtureInit:
    """How the candidates of one mixture start (see ``StreamingGaussianMixture``):
    ``init_params`` for every candidate, then the user's ``*_init`` overrides."""

    n_components: int
    covariance_type: str
    n_init: int
    init_params: str  # "kmeans", "k-means++" or "random"
    reg_covar: float
    batch_size: int
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None

    def check(self, d: int) -> None:
        """The overrides fit ``n_components`` components of ``d`` features, and are
        valid as scikit-learn's ``GaussianMixture`` checks them (its message fragments
        kept: "should be normalized", "should be positive"...)."""
        K, ct = self.n_components, self.covariance_type
        if self.weights_init is not None:
            w = _init_array("weights", self.weights_init, (K,), "weights_init")
            if np.any(w < 0.0) or np.any(w > 1.0):
                raise ParameterError(
                    f"The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{w.max():.5f}, min value {w.min():.5f} (weights_init)"
                )
            atol = 1e-6 if np.asarray(self.weights_init).dtype == np.float32 else 1e-8
            if not np.allclose(np.abs(1.0 - w.sum()), 0.0, atol=atol):
                raise ParameterError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{w.sum():.5f} (weights_init)"
                )
        if self.means_init is not None:
            _init_array("means", self.means_init, (K, d), "means_init")
        if self.precisions_init is not None:
            want = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[ct]
            prec = _init_array(f"{ct} precision", self.precisions_init, want, "precisions_init")
            if ct in ("diag", "spherical"):
                if np.any(prec <= 0.0):
                    raise ParameterError(
                        f"'{ct} precision' should be positive (precisions_init); pass "
                        "positive precisions"
                    )
            else:
                for matrix in prec if ct == "full" else [prec]:
                    if not (
                        np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)
                    ):
                        raise ParameterError(
                            f"'{ct} precision' should be symmetric, positive-definite "
                            "(precisions_init)"
                        )

    def apply(self, p: G.Params) -> G.Params:
        """``p`` with the user's overrides."""
        log_w, means, pc = p.log_weights, p.means, p.prec_chol
        if self.weights_init is not None:
            log_w = np.log(np.asarray(self.weights_init, dtype=np.float64))
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64).copy()
        if self.precisions_init is not None:
            prec = np.asarray(self.precisions_init, dtype=np.float64)
            pc = G.prec_chol_from_precisions(prec, p.cov_type)
        return G.Params(log_w, means, pc, p.cov_type)


def _init_array(what: str, value: Any, shape: tuple[int, ...], param: str) -> np.ndarray:
    """The parameter ``param`` as a finite float array of ``shape`` (scikit-learn's words)."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ParameterError(
            f"The parameter '{what}' should have the shape of {shape}, but got {array.shape} "
            f"({param})"
        )
    if not np.isfinite(array).all():
        raise ParameterError(f"{param} contains NaN or inf; pass finite values")
    return array


def initial_candidates(
    init: MixtureInit,
    source: Source,
    runner: runtime.Runner,
    seed: int,
    *,
    checkpoint_dir: Any = None,
    progress: bool = True,
) -> list[G.Params]:
    """The starting parameters of every candidate, with the user's overrides.

    ``"kmeans"`` runs one K-Means pass (its candidates give one start each; with
    ``checkpoint_dir`` that pass saves and resumes its own progress there) and one
    pass of hard assignments.
    """
    K, ct, n, n_init = init.n_components, init.covariance_type, source.n_rows, init.n_init
    if K > n:
        raise DataError(
            f"n_components={K} exceeds the {n} rows of the data; pass more rows or "
            "lower n_components"
        )
    root = np.random.SeedSequence(seed)
    spec = ChainSpec(n_clusters=K, n_init=n_init)
    if init.init_params == "kmeans":
        checkpoint = None
        if checkpoint_dir is not None:
            params = {"n_clusters": K, "n_init": n_init, "batch_size": init.batch_size}
            checkpoint = KMeansCheckpoint(
                checkpoint_dir,
                fingerprint("StreamingGaussianMixture.init", {**params, "seed": seed}, source),
            )
        fitted = fit_kmeans_chains(
            [spec],
            BatchPlan(init.batch_size),
            source,
            runner,
            root,
            checkpoint=checkpoint,
            progress=progress,
        )
        centers = fitted.chains[0].centers
        stats = sum_stats(
            G.block_hard_stats,
            source,
            centers,
            (ct,),
            runner=runner,
            batch_size=init.batch_size,
            desc="init",
            progress=progress,
        )
        refs = centers.astype(np.float64)
    elif init.init_params in ("k-means++", "random_from_data"):
        # Means on rows of a sample (k-means++ rows, or rows drawn at random), and
        # reg_covar covariances, as scikit-learn starts them.
        size = spec.init_rows(init.batch_size, n)
        pool = init_pool(source, block_ranges(source, init.batch_size), runner, root, size)
        seeds = [int(s.generate_state(1)[0]) for s in root.spawn(n_init)]
        if init.init_params == "k-means++":
            refs = kmeans_plusplus(pool, K, seeds).astype(np.float64)
        else:
            refs = np.stack([random_rows(pool, K, np.random.default_rng(s)) for s in seeds]).astype(
                np.float64
            )
        d = source.n_features
        stats = [G.Stats(np.ones(K), np.zeros((K, d)), G.zero_s2(K, d, ct), 0.0, n) for _ in refs]
    else:
        size = spec.init_rows(init.batch_size, n)
        pool = init_pool(source, block_ranges(source, init.batch_size), runner, root, size)
        center = pool.astype(np.float64).mean(axis=0)
        ref = np.repeat(center[None], K, axis=0)
        seeds = [seed + c for c in range(n_init)]
        stats = sum_stats(
            G.block_random_stats,
            source,
            ref,
            seeds,
            ct,
            runner=runner,
            batch_size=init.batch_size,
            desc="init",
            progress=progress,
        )
        refs = np.repeat(ref[None], n_init, axis=0)
    return [
        init.apply(G.m_step(st, ref, ct, init.reg_covar, initial=True))
        for st, ref in zip(stats, refs, strict=True)
    ]


@dataclass(frozen=True)
class EMSettings:
    """When exact EM stops, and how covariances are regularized."""

    tol: float = 1e-3
    max_iter: int = 100
    reg_covar: float = 1e-6
    batch_size: int = 4096  # sizes the logical blocks of every pass
    progress: bool = True
    verbose: int = 0  # scikit-learn's progress lines
    verbose_interval: int = 10


@dataclass
class EMProgress:
    """Where exact EM is: every candidate's parameters, lower bound, iterations and
    convergence, the iteration under way and the sums of its first ``blocks``."""

    active: list[G.Params]
    lower: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    it: int = 1
    blocks: int = 0
    partial: list[G.Stats | None] = field(default_factory=list)
    #: Every candidate's lower bound after each of its iterations.
    history: list[list[float]] = field(default_factory=list)

    @classmethod
    def start(cls, candidates: list[G.Params], lower: float = -np.inf) -> EMProgress:
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

    params: list[G.Params]
    lower: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    history: list[list[float]]


class EMCheckpoint(FitCheckpoint):
    """The progress of one exact EM fit in ``DIR/gmm-fit.npz``."""

    def __init__(self, directory: Any, fingerprint: dict[str, Any]) -> None:
        super().__init__(directory, "gmm-fit.npz", fingerprint)

    def save_progress(self, done: EMProgress) -> None:
        arrays = {"lower": done.lower, "n_iter": done.n_iter, "converged": done.converged}
        for c, p in enumerate(done.active):
            arrays |= {f"p{c}_log_weights": p.log_weights, f"p{c}_means": p.means}
            arrays[f"p{c}_prec_chol"] = p.prec_chol
        sums: list[list[Any] | None] = []
        for c, st in enumerate(done.partial):
            sums.append(None if st is None else [st.log_lik, st.n])
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
        active = [
            G.Params(a[f"p{c}_log_weights"], a[f"p{c}_means"], a[f"p{c}_prec_chol"], ct)
            for c, ct in enumerate(meta["cov_types"])
        ]
        partial = [
            None
            if sums is None
            else G.Stats(a[f"s{c}_nk"], a[f"s{c}_s1"], a[f"s{c}_s2"], float(sums[0]), int(sums[1]))
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
    start: Callable[[], list[G.Params]],
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
    start: list[G.Params] | EMProgress,
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
    while done.it <= settings.max_iter and not converged.all():
        it = done.it
        params: list[G.Params | None] = [None if converged[c] else active[c] for c in range(n)]
        on_block = None
        if checkpoint is not None:
            on_block = functools.partial(_save_block, checkpoint, done)
        stats = sum_stats(
            G.block_estep,
            source,
            params,
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
            prev, lower[c] = lower[c], st.log_lik / st.n
            active[c] = G.m_step(st, active[c].means, active[c].cov_type, settings.reg_covar)
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
