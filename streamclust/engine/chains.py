"""K-Means chains: candidates that advance in lockstep over the same mini-batches.

Several models (different ``n_clusters``, ``init`` or ``n_init``) may share the
passes of one :class:`BatchPlan`: every block is read once for all of them and
each model gets exactly the state it would get alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import runtime
from ..exceptions import DataError
from ..kernels import chain as C
from ..kernels import kmeans as K
from ..kernels import seeding, sparse
from ..persistence import FitCheckpoint
from ..sources import Source
from .plan import BatchPlan, Step, block_ranges, logical_pass, pass_steps
from .seeds import SEED_CANDIDATE, SEED_INIT, child, seed_int

__all__ = [
    "INIT_BLOCKS",
    "ChainSpec",
    "ChainsFit",
    "Chosen",
    "KMeansCheckpoint",
    "advance_in_row_order",
    "all_stopped",
    "choose_candidate",
    "fit_kmeans_chains",
    "init_candidates",
    "check_centers_width",
    "init_pool",
    "labels_inertia",
    "lloyd",
    "stop_rule",
]

#: At most this many randomly chosen blocks supply the initialization sample.
INIT_BLOCKS = 8


@dataclass(frozen=True)
class ChainSpec:
    """One model's candidates: their number of centers, how they start, how they score."""

    n_clusters: int
    n_init: int = 1
    init: Any = "k-means++"  # "k-means++", "random" or an (n_clusters, n_features) array
    init_size: int | None = None
    last_n: int = 10
    forget: C.Forgetting | None = None  # how old rows lose weight (None: never)

    def init_rows(self, batch_size: int, n_rows: int) -> int:
        """Rows sampled for initialization, as scikit-learn's MiniBatchKMeans takes
        them: ``init_size``, else ``3 * batch_size``; ``3 * n_clusters`` when that is
        below ``n_clusters``; clamped to the data."""
        size = 3 * batch_size if self.init_size is None else self.init_size
        if size < self.n_clusters:
            size = 3 * self.n_clusters
        return min(size, n_rows)


class ChainsFit(NamedTuple):
    """Each spec's merged chain, and the steps and passes run."""

    chains: list[C.Chain]
    n_steps: int
    n_passes: int


def init_pool(
    source: Source,
    ranges: Sequence[tuple[int, int]],
    runner: runtime.Runner,
    root: np.random.SeedSequence,
    size: int,
) -> np.ndarray:
    """``size`` rows sampled uniformly from up to INIT_BLOCKS random blocks."""
    rng = np.random.default_rng(child(root, SEED_INIT))
    chosen = np.sort(rng.choice(len(ranges), size=min(INIT_BLOCKS, len(ranges)), replace=False))
    picked = [ranges[i] for i in chosen]
    per_block = math.ceil(size / len(picked))
    seeds = rng.integers(0, 2**31 - 1, size=len(picked))
    by_start = {lo: int(seed) for (lo, _), seed in zip(picked, seeds, strict=True)}
    # The picked blocks are read in parallel, their samples come back in order.
    pool = seeding.stack_rows(
        list(
            runtime.map_blocks(
                seeding.sample_block_rows, source, per_block, by_start, runner=runner, ranges=picked
            )
        )
    )
    if pool.shape[0] > size:
        pool = pool[np.sort(rng.choice(pool.shape[0], size=size, replace=False))]
    return pool


def check_centers_width(shape: tuple[int, ...], n_features: int) -> None:
    """Refuse initial centers whose width is not the data's (scikit-learn's words)."""
    if len(shape) != 2 or shape[1] != n_features:
        raise DataError(
            f"The shape of the initial centers {shape} does not match the number of "
            f"features of the data {n_features}; pass centers of the data's width"
        )


def _called_init(init: Any, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The centers a callable ``init(X, n_clusters, random_state)`` gives, checked."""
    centers = np.asarray(init(pool, k, random_state=np.random.RandomState(seed % 2**32)))
    if centers.ndim != 2 or centers.shape[0] != k:
        raise DataError(
            f"The shape of the initial centers {centers.shape} does not match the number "
            f"of clusters {k}; the callable init must return (n_clusters, n_features)"
        )
    check_centers_width(centers.shape, pool.shape[1])
    if not np.isfinite(centers).all():
        raise DataError("the callable init returned NaN or inf; return finite centers")
    return centers.astype(pool.dtype)


def init_candidates(
    spec: ChainSpec,
    pool: np.ndarray,
    root: np.random.SeedSequence,
    runner: runtime.Runner,
    n_features: int,
) -> C.Chain:
    """A chain of ``spec.n_init`` candidates started from ``pool``, each with its own seed
    (a pool one column wider than ``n_features`` carries the rows' weights)."""
    k, n_init = spec.n_clusters, spec.n_init
    pool, weights = seeding.split_weights(pool)
    if pool.shape[0] < k:
        raise DataError(
            f"n_samples={pool.shape[0]} should be >= n_clusters={k}: the initialization "
            f"saw {pool.shape[0]} rows; pass more rows or lower n_clusters"
        )
    if not isinstance(spec.init, str) and not callable(spec.init):
        check_centers_width(np.shape(spec.init), pool.shape[1])
    seeds = [child(root, SEED_CANDIDATE, c).spawn(2) for c in range(n_init)]
    states = [dict(np.random.PCG64(rng_ss).state) for _, rng_ss in seeds]
    if callable(spec.init):
        centers = np.stack([_called_init(spec.init, pool, k, seed_int(s)) for s, _ in seeds])
    elif not isinstance(spec.init, str):
        centers = np.repeat(np.asarray(spec.init, dtype=pool.dtype)[None], n_init, axis=0)
    elif spec.init == "k-means++":
        # A task per group of candidates, on workers or pool threads (one BLAS thread
        # each, like the steps): a candidate depends only on its own seed.
        seed_ints = [seed_int(init_ss) for init_ss, _ in seeds]
        groups = np.array_split(np.arange(n_init), runner.chain_groups(n_init))
        with runner.parallel():
            tasks = [
                functools.partial(
                    runner.submit,
                    seeding.kmeans_plusplus,
                    pool,
                    k,
                    [seed_ints[i] for i in group],
                    weights,
                )
                for group in groups
            ]
            futures = [task() for task in tasks]
            centers = np.concatenate(
                [runner.result(f, task) for f, task in zip(futures, tasks, strict=True)]
            )
    else:
        centers = np.stack(
            [
                seeding.random_rows(pool, k, np.random.default_rng(init_ss), weights)
                for init_ss, _ in seeds
            ]
        )
    return C.new_chain(centers, states, spec.last_n, tuple(range(n_init)), forget=spec.forget)


class KMeansCheckpoint(FitCheckpoint):
    """The scan state of one fit in ``DIR/kmeans-fit.npz``: chains, position, fingerprint."""

    def __init__(self, directory: Any, fingerprint: dict[str, Any]) -> None:
        super().__init__(directory, "kmeans-fit.npz", fingerprint)

    def load_chain(self) -> tuple[C.Chain, tuple[int, int]] | None:
        saved = self.load()
        if saved is None:
            return None
        meta, arrays = saved
        return C.chain_from_state(meta["chain"], arrays), (int(meta["pass"]), int(meta["step"]))

    def save_chains(self, chains: list[C.Chain], position: tuple[int, int]) -> None:
        scalars, arrays = C.chain_to_state(C.merge_chains(chains))
        self.save({"chain": scalars, "pass": position[0], "step": position[1]}, arrays)


def fit_kmeans_chains(
    specs: Sequence[ChainSpec],
    plan: BatchPlan,
    source: Source,
    runner: runtime.Runner,
    root: np.random.SeedSequence,
    *,
    checkpoint: KMeansCheckpoint | None = None,
    progress: bool = True,
) -> ChainsFit:
    """Initialize every spec's candidates and run the plan's passes, all in lockstep.

    With a ``checkpoint`` (one spec only), the state is saved after every block
    and a matching saved state is resumed from.
    """
    ranges = block_ranges(source, plan.batch_size)
    per_pass = sum(math.ceil((hi - lo) / plan.batch_size) for lo, hi in ranges)
    total = plan.max_steps if plan.max_steps is not None else plan.max_passes * per_pass
    n_passes = math.ceil(total / per_pass)
    resumed = None if checkpoint is None else checkpoint.load_chain()
    chains: list[C.Chain] = []
    owner: list[int] = []
    if resumed is not None:
        merged, start = resumed
        chains = C.split_chain(merged, runner.chain_groups(merged.centers.shape[0]))
        owner = [0] * len(chains)
    else:
        start = (0, 0)
        pools: dict[int, np.ndarray] = {}
        for s_idx, spec in enumerate(specs):
            size = spec.init_rows(plan.batch_size, source.n_rows)
            if size not in pools:  # the same sample for every spec of the same size
                pools[size] = init_pool(source, ranges, runner, root, size)
            merged = init_candidates(spec, pools[size], root, runner, source.n_features)
            merged.stop = stop_rule(plan, pools[size], source)
            groups = C.split_chain(merged, runner.chain_groups(spec.n_init, len(specs)))
            chains += groups
            owner += [s_idx] * len(groups)
        if checkpoint is not None:
            checkpoint.save_chains(chains, start)
    done = started = 0
    for p in range(n_passes):
        if all_stopped(chains):
            break
        steps = pass_steps(plan, ranges, root, p, total - done, total)
        done += sum(step.arg.n_batches for step in steps)
        if (p, len(steps)) <= start:
            continue
        started = p + 1
        skip = start[1] if p == start[0] else 0
        after = functools.partial(_after_step, checkpoint, p, skip, plan.verbose)
        rows = sum(step.stop - step.start for step in steps[skip:])
        with runtime.progress_bar(rows, f"pass {p + 1}/{n_passes}", progress) as bar:
            chains = runtime.scan(
                K.scan_block,
                source,
                chains,
                steps[skip:],
                runner=runner,
                progress=bar.update,
                on_step=after,
                until=all_stopped if plan.stops_early else None,
            )
    merged_chains = [
        C.merge_chains([c for c, o in zip(chains, owner, strict=True) if o == s_idx])
        for s_idx in range(len(specs))
    ]
    return ChainsFit(merged_chains, max(c.steps for c in chains), max(started, start[0] + 1))


def stop_rule(plan: BatchPlan, pool: np.ndarray, source: Source) -> C.StopRule | None:
    """The plan's early-stopping rule for candidates started from ``pool``: ``tol``
    scaled by the mean feature variance of the pool's rows (scikit-learn scales it by
    the whole data's, which out of core is not known before the first step)."""
    if not plan.stops_early:
        return None
    rows, _ = seeding.split_weights(pool)
    scale = sparse.mean_variance(rows) if plan.tol else 0.0
    alpha = min(1.0, plan.batch_size * 2.0 / (source.n_rows + 1))
    return C.StopRule(plan.tol * scale, plan.max_no_improvement, alpha, plan.batch_size)


def all_stopped(chains: list[C.Chain]) -> bool:
    """True when every candidate of every chain has stopped early."""
    return all(c.stop is not None and bool(c.stopped.all()) for c in chains)


def _after_step(
    checkpoint: KMeansCheckpoint | None,
    p: int,
    skip: int,
    verbose: bool,
    i: int,
    states: list[C.Chain],
) -> None:
    """After a block: print the chains' progress lines (``verbose``), then checkpoint."""
    if verbose:
        for chain in states:
            for line in chain.log:
                print(line)
            chain.log.clear()
    if checkpoint is not None:
        checkpoint.save_chains(states, (p, skip + i + 1))


def advance_in_row_order(
    chain: C.Chain, source: Source, runner: runtime.Runner, batch_size: int, ratio: float
) -> C.Chain:
    """One pass over ``source`` in row order, in steps of ``batch_size`` rows."""
    steps = [
        Step(lo, hi, K.StepArg(None, math.ceil((hi - lo) / batch_size), batch_size, ratio))
        for lo, hi in block_ranges(source, batch_size)
    ]
    return runtime.scan(K.scan_block, source, [chain], steps, runner=runner)[0]


class Chosen(NamedTuple):
    """The candidate a fit keeps: its index, centers, exact inertia and rows per center,
    its labels (when asked), and every candidate's exact inertia (full selection)."""

    best: int
    centers: np.ndarray
    inertia: float
    sizes: np.ndarray
    labels: np.ndarray | None
    inertias: np.ndarray | None


def choose_candidate(
    chain: C.Chain,
    source: Source,
    runner: runtime.Runner,
    *,
    full: bool,
    refine: int,
    want_labels: bool,
    batch_size: int,
    progress: bool = True,
) -> Chosen:
    """Pick the candidate with the lowest window score, or (``full``) the lowest exact
    inertia from one pass over every candidate; run ``refine`` Lloyd passes from it
    (its centers in ``chain`` become the refined ones); and measure its exact inertia
    in one pass, unless the full selection's pass already did."""
    inertias = None
    exact: tuple[np.ndarray | None, float, np.ndarray] | None = None
    if full:
        labels, inertias, sizes = labels_inertia(
            source, runner, chain.centers, want_labels, batch_size, progress
        )
        best = int(np.argmin(inertias))
        exact = (None if labels is None else labels[:, best], inertias[best], sizes[best])
    else:
        best = int(np.argmin(chain.window_scores()))
    centers = chain.centers[best].copy()
    if refine:
        centers = lloyd(source, runner, centers, refine, batch_size, progress)
        chain.centers[best] = centers
        exact = None
    if exact is None:
        labels, one, sizes = labels_inertia(
            source, runner, centers[None], want_labels, batch_size, progress
        )
        exact = (None if labels is None else labels[:, 0], one[0], sizes[0])
    labels, inertia, sizes = exact
    return Chosen(best, centers, float(inertia), sizes, labels, inertias)


def labels_inertia(
    source: Source,
    runner: runtime.Runner,
    centers: np.ndarray,
    want_labels: bool,
    batch_size: int,
    progress: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """One pass over the logical blocks of ``batch_size``: the exact float64 inertia
    of each candidate's ``centers`` (g, k, d), the rows nearest to each of its
    centers, and the labels when asked."""
    inertia = np.zeros(centers.shape[0], np.float64)
    sizes = np.zeros(centers.shape[:2], np.int64)
    labels = []
    parts = logical_pass(
        K.block_labels_inertia,
        source,
        centers,
        want_labels,
        runner=runner,
        batch_size=batch_size,
        desc="inertia",
        progress=progress,
    )
    for lab, part, part_sizes in parts:
        inertia += part
        sizes += part_sizes
        if want_labels:
            labels.append(lab)
    return (np.concatenate(labels) if want_labels else None), inertia, sizes


def lloyd(
    source: Source,
    runner: runtime.Runner,
    centers: np.ndarray,
    n_iter: int,
    batch_size: int,
    progress: bool = True,
) -> np.ndarray:
    """``n_iter`` Lloyd iterations from ``centers`` (k, d), one data-parallel pass
    each over the logical blocks of ``batch_size``."""
    for it in range(n_iter):
        sums = np.zeros(centers.shape, np.float64)
        counts = np.zeros(centers.shape[0], np.float64)
        desc = f"refine {it + 1}"
        for s, c, _ in logical_pass(
            K.block_lloyd_stats,
            source,
            centers,
            runner=runner,
            batch_size=batch_size,
            desc=desc,
            progress=progress,
        ):
            sums += s
            counts += c
        hit = counts > 0
        centers = centers.copy()
        centers[hit] = (sums[hit] / counts[hit][:, None]).astype(centers.dtype)
    return centers
