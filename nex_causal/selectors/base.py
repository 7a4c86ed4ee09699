"""What every Best-of-N selector shares: its settings, its outcome, the registry, and how picks are made.

A selector sees the responses of one cache grouped by prompt (a ``Pool``) and returns an
``Outcome``: per prompt, the accuracy it achieves (0/1 for a single pick, a fraction for
the random baseline) and the generated tokens it read to decide. Conventions for every
pick: a score that is undefined (NaN) never wins, and ties go to the lowest sample index,
so every pick is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nex_causal.nex.calibration import Calibrations
from nex_causal.registry import Registry
from nex_causal.selectors.config import SelectionConfig
from nex_causal.selectors.pool import Pool


@dataclass(frozen=True)
class Context:
    """What a selector may read besides the pool: the settings, and the NEX calibrations of the table's caches
    (``calibrations``, under the run's NEX settings) with the name of the pool's cache among them."""

    config: SelectionConfig = SelectionConfig()
    calibrations: Calibrations | None = None
    name: str = ""
    progress: bool = False  # progress bars while NEX learns and scores


@dataclass(frozen=True)
class Outcome:
    """Per prompt: the accuracy a selector achieves (0/1 for one pick) and tokens it read; ``note``
    qualifies the result (a score that degenerated to another)."""

    value: np.ndarray
    tokens: np.ndarray
    note: str = ""


Selector = Callable[[Pool, Context], Outcome]
SELECTORS: Registry[Selector] = Registry("selector", providers=tuple(
    f"nex_causal.selectors.{family}" for family in ("answers", "confidence", "neurons", "references")))


def argmax_pick(scores: np.ndarray) -> int:
    """Index of the highest score; NaN never wins; ties and all-NaN go to the lowest index."""
    scores = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


def picks(pool: Pool, choose: Callable[[int, np.ndarray], int], tokens: np.ndarray | None = None) -> Outcome:
    """Outcome of choosing ``choose(group number, response positions)`` in every group."""
    correct = pool.correct
    chosen = np.array([g[choose(i, g)] for i, g in enumerate(pool.groups)])
    read = pool.n_tokens if tokens is None else tokens
    return Outcome(correct[chosen].astype(np.float64), np.array([read[g].sum() for g in pool.groups]))


def by_score(name: str, scores: Callable[[Pool, Context], np.ndarray]) -> Selector:
    """Register and return the selector keeping each group's highest-scoring response."""
    def run(pool: Pool, context: Context) -> Outcome:
        values = scores(pool, context)
        return picks(pool, lambda _, g: argmax_pick(values[g]))
    return SELECTORS.add(name, run)
