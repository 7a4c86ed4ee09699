"""Selectors on the model's own next-token distributions (NEX_METHOD section 8).

Per response, from the token statistics capture stores: the lowest mean token entropy,
the highest self-certainty (mean KL(U || p_t)), the highest mean log-probability, and
DeepConf's token confidence C_t = -(1/k) sum of the top-k log-probabilities (k = 20),
summarised by its lowest group, its bottom-10% groups or its tail (windows of
``deepconf_window`` tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nex_causal.pool import Pool, trace_mean
from nex_causal.selectors.base import Context, SelectionConfig, by_score

DEEPCONF_K = 20  # top-k of DeepConf's token confidence; capture stores the sum of the top 20


def group_confidences(confidence: np.ndarray, window: int) -> np.ndarray:
    """DeepConf group confidences: means of ``confidence`` over sliding windows (stride 1).

    A trace shorter than ``window`` is one group (its mean); an empty trace has none.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    width = min(window, len(confidence))
    if width == 0:
        return confidence
    csum = np.concatenate([[0.0], np.cumsum(confidence)])
    return (csum[width:] - csum[:-width]) / width


def lowest_group_confidence(confidence: np.ndarray, window: int) -> float:
    """The least confident window of a trace (DeepConf lowest-group confidence)."""
    groups = group_confidences(confidence, window)
    return float(groups.min()) if len(groups) else float("nan")


def bottom_group_confidence(confidence: np.ndarray, window: int, fraction: float = 0.1) -> float:
    """Mean of the lowest ``fraction`` of a trace's group confidences (at least one group)."""
    groups = np.sort(group_confidences(confidence, window))
    if not len(groups):
        return float("nan")
    return float(groups[:max(1, math.ceil(fraction * len(groups)))].mean())


def tail_confidence(confidence: np.ndarray, window: int) -> float:
    """Mean confidence of the last ``window`` tokens of a trace."""
    confidence = np.asarray(confidence, dtype=np.float64)
    return float(confidence[-window:].mean()) if len(confidence) else float("nan")


def _deepconf(reduce: Callable[[np.ndarray, SelectionConfig], float]) -> Callable[[Pool, Context], np.ndarray]:
    """Per-response DeepConf score ``reduce(C, config)`` of C_t = -(top-20 log-prob sum) / 20."""
    def scores(pool: Pool, context: Context) -> np.ndarray:
        return pool.per_response(lambda s: reduce(-s / DEEPCONF_K, context.config), "token_top20_logprob_sum")
    return scores


by_score("entropy", lambda pool, context: -pool.per_response(trace_mean, "token_entropy"))
by_score("self-certainty", lambda pool, context: pool.per_response(trace_mean, "token_kl_uniform"))
by_score("deepconf-lowest", _deepconf(lambda c, cfg: lowest_group_confidence(c, cfg.deepconf_window)))
by_score("deepconf-bottom10", _deepconf(lambda c, cfg: bottom_group_confidence(c, cfg.deepconf_window,
                                                                               cfg.bottom_fraction)))
by_score("deepconf-tail", _deepconf(lambda c, cfg: tail_confidence(c, cfg.deepconf_window)))
by_score("logprob", lambda pool, context: pool.per_response(trace_mean, "token_logprob"))
