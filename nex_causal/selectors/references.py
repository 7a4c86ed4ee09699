"""The reference rows of every selection table: a random pick, Avg@N and the oracle.

``random`` is, per prompt, the mean over ``n_random_seeds`` seeded uniform picks (so its
expectation is Avg@N); ``avg@n`` is the mean accuracy of the N samples and makes no pick
(it reads no tokens: NaN); ``oracle`` counts a prompt as solved when any sample is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nex_causal.selectors.base import SELECTORS, Context, Outcome
from nex_causal.selectors.pool import Pool


@SELECTORS.register("random")
def _random(pool: Pool, context: Context) -> Outcome:
    config = context.config
    rng = np.random.default_rng(config.seed)
    correct = pool.correct
    value = np.array([correct[g[rng.integers(0, len(g), config.n_random_seeds)]].mean() for g in pool.groups])
    return Outcome(value, np.zeros(len(pool)))


def _reference(reduce: Callable[[np.ndarray], float], reads_all: bool) -> Callable[[Pool, Context], Outcome]:
    """A reference row: ``reduce`` of each prompt's ``correct`` (no pick is made)."""
    def run(pool: Pool, context: Context) -> Outcome:
        value = np.array([reduce(pool.correct[g]) for g in pool.groups], dtype=np.float64)
        tokens = (np.array([pool.n_tokens[g].sum() for g in pool.groups], dtype=np.float64) if reads_all
                  else np.full(len(pool), np.nan))
        return Outcome(value, tokens)
    return run


SELECTORS.add("avg@n", _reference(np.mean, reads_all=False))
SELECTORS.add("oracle", _reference(np.max, reads_all=True))
