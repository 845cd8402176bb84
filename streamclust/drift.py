"""Drift in a stream: a Page-Hinkley test on the score of every batch.

The score is a loss (higher is worse): the mean squared distance of the
batch's rows to their nearest center for K-Means, minus their mean
log-likelihood for a mixture, measured by the model *before* it learns the
batch. The first ``warmup`` scores set the stream's baseline (mean and spread);
each later score, standardized by them, feeds the Page-Hinkley cumulative sum
``m_t = sum(z_i - delta)``; an alarm is raised when ``m_t`` rises more than
``threshold`` above its minimum, that is when batches keep fitting worse than
they used to. After an alarm the test starts over (a new baseline), so a
stream that settles in its new regime is not flagged again. The batches since
``m_t`` was at its minimum are where the change began (``window`` after an
alarm): a stream told to refit starts its new model from them.

The state is a small JSON dict, checkpointed with the stream's ledger, so a
resumed stream raises the same alarms at the same batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PageHinkley"]


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase of a batch score (see the module docstring).

    ``delta``: the standardized rise tolerated per batch; ``threshold``: the
    cumulative rise that raises an alarm; ``warmup``: batches that set the
    baseline. With the defaults a sustained rise of three baseline spreads is
    flagged within about five batches, one of six spreads within two, and a
    rise below one spread (noise, a slow drift that is being followed) is not.
    """

    delta: float = 1.0
    threshold: float = 10.0
    warmup: int = 20
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    cum: float = 0.0
    low: float = 0.0
    #: scores since ``cum`` was at its minimum
    since_low: int = 0
    #: at the last alarm: the batches since the change began (the alarm's included)
    window: int = 0

    def update(self, score: float) -> bool:
        """Take one batch's score; True when it raises an alarm (the test then restarts)."""
        if not math.isfinite(score):
            return False
        if self.n < self.warmup:  # Welford's running mean and variance of the baseline
            self.n += 1
            step = score - self.mean
            self.mean += step / self.n
            self.m2 += step * (score - self.mean)
            return False
        spread = math.sqrt(self.m2 / max(1, self.n - 1))
        spread = max(spread, 1e-12 * max(1.0, abs(self.mean)))
        self.cum += (score - self.mean) / spread - self.delta
        self.since_low += 1
        if self.cum <= self.low:
            self.low, self.since_low = self.cum, 0
        if self.cum - self.low > self.threshold:
            self.window = self.since_low
            self.n, self.mean, self.m2, self.cum, self.low = 0, 0.0, 0.0, 0.0, 0.0
            self.since_low = 0
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PageHinkley:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
