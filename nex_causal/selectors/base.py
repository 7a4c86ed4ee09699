"""What every Best-of-N selector shares: its settings, its outcome, the registry, and how picks are made.

A selector sees the responses of one cache grouped by prompt (a ``Pool``) and returns an
``Outcome``: per prompt, the accuracy it achieves (0/1 for a single pick, a fraction for
the random baseline) and the generated tokens it read to decide. Conventions for every
pick: a score that is undefined (NaN) never wins, and ties go to the lowest sample index,
so every pick is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from nex_causal.pool import Pool
from nex_causal.registry import Registry


@dataclass(frozen=True)
class SelectionConfig:
    """Which selectors run and their knobs (defaults: the papers' values, NEX_METHOD section 8)."""

    selectors: list[str] | None = field(default=None, metadata={"help": "selectors to run (default: all)"})
    early_tokens: int = field(default=32, metadata={"help": "NAD early-decision prefix, in tokens"})
    deepconf_window: int = field(default=2048, metadata={"help": "DeepConf group (sliding window) size, in tokens"})
    bottom_fraction: float = field(default=0.1, metadata={"help": "DeepConf bottom-group share"})
    deepconf_entries: Literal["returned", "top20"] = field(default="returned", metadata={
        "help": "DeepConf token confidence: mean of the log-probs an engine returns (top 20, plus the sampled "
                "token when outside; the authors' code) or the top-20 sum over 20"})
    filter_eta: float = field(default=0.1, metadata={"help": "share of traces deepconf-filter10-vote keeps"})
    borda_power: float = field(default=0.5, metadata={"help": "power p of the self-certainty Borda vote (N - r + 1)^p"})
    self_certainty_alignment: Literal["reference", "predicting"] = field(default="reference", metadata={
        "help": "reference: the distributions at the response's positions (the authors' code); predicting: "
                "those that predicted each response token (NEX's alignment)"})
    knn_k: int = field(default=3, metadata={"help": "neighbours of the kNN-medoid"})
    n_random_seeds: int = field(default=100, metadata={"help": "draws averaged by the random baseline"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples of prompts"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and the random baseline"})


@dataclass(frozen=True)
class Context:
    """What a selector may read besides the pool: the settings, and NEX weights learned elsewhere."""

    config: SelectionConfig = SelectionConfig()
    weights: np.ndarray | None = None  # for ``nex-cross``
    progress: bool = False  # progress bars while NEX learns and scores


@dataclass(frozen=True)
class Outcome:
    """Per prompt: the accuracy a selector achieves (0/1 for one pick) and tokens it read; ``note``
    qualifies the result (a score that degenerated to another)."""

    value: np.ndarray
    tokens: np.ndarray
    note: str = ""


Selector = Callable[[Pool, Context], Outcome]
SELECTORS: Registry[Selector] = Registry("selector")


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
