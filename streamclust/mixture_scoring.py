"""What every fitted Gaussian mixture does with data, out of core: densities,
responsibilities, labels, the mean log-likelihood, samples and saving.

A model using :class:`MixtureScoring` keeps, in ``_params``, the Gaussian mixture
its E-step scores with (for a variational model: the expected mixture).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import runtime
from .engine.apply import DATA_DTYPE, apply_blocks
from .engine.plan import block_ranges
from .inputs import as_source, takes_storage_options
from .kernels import gmm as G
from .persistence import save_model
from .sources import Source

__all__ = ["MixtureScoring"]


class MixtureScoring:
    """``score_samples``, ``predict_proba``, ``predict``, ``fit_predict``, ``score``,
    ``sample`` and ``save`` of a fitted mixture, block by block."""

    n_components: int
    batch_size: int
    client: Any
    _params: G.Params

    def _params_for(self, source: Source) -> G.Params:
        return self._params

    @takes_storage_options
    def score_samples(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Log-density ``log p(x)`` of every row (lazy for dask input; ``out`` streams)."""
        return apply_blocks(
            self, X, G.block_score_as_data, self._params_for, DATA_DTYPE, None, out, overwrite
        )

    def score_kernel(self) -> tuple[Any, Any]:
        """The per-block task of :meth:`score_samples` and its model argument."""
        check_is_fitted(self, "_params")
        return G.block_score, self._params

    @takes_storage_options
    def predict_proba(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Responsibilities, shape (n_samples, n_components)."""
        k = self.n_components
        return apply_blocks(
            self, X, G.block_proba_as_data, self._params_for, DATA_DTYPE, k, out, overwrite
        )

    @takes_storage_options
    def predict(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Most likely component of every row."""
        return apply_blocks(
            self, X, G.block_predict, self._params_for, np.int32, None, out, overwrite
        )

    @takes_storage_options
    def fit_predict(self, X: Any, y: Any = None) -> Any:
        return self.fit(X).predict(X)  # type: ignore[attr-defined]

    def total_log_likelihood(self, X: Any) -> tuple[float, int]:
        """Sum of ``log p(x)`` over all rows and the row count (one pass, no per-row output)."""
        check_is_fitted(self, "_params")
        source = as_source(self, X, reset=False)
        runner = runtime.resolve_runner(self.client, source)
        ranges = block_ranges(source, self.batch_size)
        parts = runtime.map_blocks(
            G.block_score_sum, source, self._params, runner=runner, ranges=ranges
        )
        return float(np.sum(list(parts))), source.n_rows

    @takes_storage_options
    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-row log-likelihood of ``X``."""
        total, n = self.total_log_likelihood(X)
        return total / n

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the fitted mixture (as scikit-learn: a seeded draw per component)."""
        check_is_fitted(self, "_params")
        return self.to_sklearn().sample(n_samples)  # type: ignore[attr-defined]

    def save(self, path: Any, overwrite: bool = False) -> None:
        """Save to directory ``path`` (arrays in ``.npz`` + JSON manifest, atomically);
        a model saved there before is replaced only with ``overwrite=True``."""
        save_model(self, path, overwrite=overwrite)
