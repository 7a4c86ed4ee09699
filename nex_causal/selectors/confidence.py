"""Selectors on the model's own next-token distributions (NEX_METHOD section 8), as their authors compute them.

Entropy and log-probability: the lowest mean token entropy, the highest mean log p.

DeepConf (Fu et al. 2025; facebookresearch/deepconf). Token confidence is the negated mean
of the log-probabilities the engine returns at that position, rounded to 3 decimals:
``C_t = round(-(sum of the returned log-probs) / (their count), 3)``, the returned entries
being the top 20 plus the sampled token when it is outside them (``deepconf_entries:
returned``; ``top20`` divides the top-20 sum by 20, for caches made before the returned
entries were stored). Group confidences are the means of ``C_t`` over sliding windows of
``deepconf_window`` tokens (stride 1); a trace shorter than the window is one group, its
mean. Per trace: the lowest group (``deepconf-lowest``), the mean of the lowest
``max(1, floor(bottom_fraction * n_groups))`` groups (``-bottom10``), or the mean of the last
window (``-tail``); the pick is the argmax. The published results are votes over the traces
with an extracted answer: ``deepconf-weighted-vote`` adds each trace's lowest-group
confidence to its answer, ``deepconf-filter10-vote`` first keeps the traces whose
lowest-group confidence is at least the ``(1 - filter_eta)`` percentile of the prompt's
(numpy's linear interpolation), then votes the same way. When every trace of a cache is
shorter than the window, the three scores are each trace's mean and the table says so.

Self-certainty (Kang et al. 2025; backprop07/Self-Certainty). Per trace the mean of
KL(U || p) over its distributions; in the authors' alignment (``self_certainty_alignment:
reference``) these are the distributions at the response's own positions: the one that
predicted the first response token is left out and the one after the last token is in
(replay records it as ``final_kl_uniform``); ``predicting`` uses the distributions that
predicted each response token, NEX's alignment, which a stepwise cache also has. A trace
without an extracted answer scores lowest (the reference's -1e9) when answers exist.
``self-certainty-borda`` ranks a prompt's traces by it (stable) and gives the answer of the
trace at rank r (from 1) the vote ``(N - r + 1) ** borda_power``; traces without an answer
vote for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from nex_causal.errors import NexError
from nex_causal.selectors.answers import extracted_answers, weighted_vote
from nex_causal.selectors.base import (
    SELECTORS,
    Context,
    Outcome,
    SelectionConfig,
    by_score,
    picks,
)
from nex_causal.selectors.pool import Pool, trace_mean

DEEPCONF_K = 20  # the top-k log-probs an engine returns for DeepConf (capture stores their sum and count)
NO_ANSWER = -1e9  # the self-certainty of a trace without an extracted answer, as in the reference


def token_confidence(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """DeepConf's token confidence C_t: the negated mean of the log-probs an engine returns, rounded to 3 places."""
    return np.round(-np.asarray(sums, np.float64) / np.asarray(counts, np.float64), 3)


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
    """Mean of the lowest ``max(1, floor(fraction * n_groups))`` group confidences, as the reference keeps."""
    groups = group_confidences(confidence, window)
    if not len(groups):
        return float("nan")
    keep = max(1, int(fraction * len(groups)))
    return float(np.partition(groups, keep - 1)[:keep].mean())


def tail_confidence(confidence: np.ndarray, window: int) -> float:
    """Mean confidence of the last ``window`` tokens of a trace."""
    confidence = np.asarray(confidence, dtype=np.float64)
    return float(confidence[-window:].mean()) if len(confidence) else float("nan")


def token_confidences(pool: Pool, config: SelectionConfig) -> list[np.ndarray]:
    """Each response's DeepConf token confidences C_t under ``config.deepconf_entries``."""
    def compute() -> list[np.ndarray]:
        if config.deepconf_entries == "top20":
            return [-s / DEEPCONF_K for s in pool.token_column("token_top20_logprob_sum")]
        if "token_confidence_sum" not in pool.responses:
            raise NexError("no token_confidence_sum/count in the responses table (a cache made before they were "
                           "recorded): recapture, or set deepconf_entries: top20")
        sums, counts = pool.token_column("token_confidence_sum"), pool.token_column("token_confidence_count")
        return [token_confidence(s, c) for s, c in zip(sums, counts)]
    return pool.memo(("deepconf", config.deepconf_entries), compute)


def whole_trace_note(pool: Pool, window: int) -> str:
    """The note for a cache whose every trace is shorter than the window ('' otherwise)."""
    if len(pool.n_tokens) and int(pool.n_tokens.max()) < window:
        return (f"whole-trace: every trace is shorter than the {window}-token window, so lowest, bottom "
                "and tail are its mean")
    return ""


def _deepconf(reduce: Callable[[np.ndarray, SelectionConfig], float]) -> Callable[[Pool, Context], Outcome]:
    """The argmax selector of the per-trace DeepConf score ``reduce(C, config)``."""
    def run(pool: Pool, context: Context) -> Outcome:
        scores = np.array([reduce(c, context.config) for c in token_confidences(pool, context.config)])
        outcome = picks(pool, lambda _, g: int(np.argmax(np.where(np.isnan(scores[g]), -np.inf, scores[g]))))
        return replace(outcome, note=whole_trace_note(pool, context.config.deepconf_window))
    return run


def _lowest(c: np.ndarray, config: SelectionConfig) -> float:
    return lowest_group_confidence(c, config.deepconf_window)


def deepconf_vote(pool: Pool, context: Context, eta: float | None) -> Outcome:
    """Confidence-weighted vote over the traces with an answer, after keeping the top ``eta`` share (None: all)."""
    config = context.config
    answers = extracted_answers(pool)
    scores = np.array([_lowest(c, config) for c in token_confidences(pool, config)])

    def choose(_, g: np.ndarray) -> int:
        voters = [i for i, r in enumerate(g) if answers[r] is not None and not np.isnan(scores[r])]
        if eta is not None and voters:
            threshold = np.percentile(scores[g[voters]], (1 - eta) * 100)
            voters = [i for i in voters if scores[g[i]] >= threshold]
        pick = weighted_vote([answers[g[i]] for i in voters], scores[g[voters]] if voters else [])
        return 0 if pick is None else voters[pick]
    outcome = picks(pool, choose)
    return replace(outcome, note=whole_trace_note(pool, config.deepconf_window))


def self_certainty(pool: Pool, config: SelectionConfig) -> np.ndarray:
    """Each response's self-certainty in ``config.self_certainty_alignment``."""
    kl = pool.token_column("token_kl_uniform")
    if config.self_certainty_alignment == "predicting":
        return np.array([trace_mean(k) for k in kl])
    final = pool.responses.get("final_kl_uniform")
    if final is None or final.isna().any():
        raise NexError("the reference alignment needs the distribution after each response's last token "
                       "(final_kl_uniform, which capture by replay records): recapture with method replay, or "
                       "set self_certainty_alignment: predicting")
    return np.array([trace_mean(np.append(k[1:], f)) for k, f in zip(kl, final.to_numpy(np.float64))])


def _certainty_with_answers(pool: Pool, config: SelectionConfig) -> np.ndarray:
    """Self-certainty, with the reference's lowest score for traces without an answer (when answers exist)."""
    scores = self_certainty(pool, config)
    if "answer" in pool.responses and pool.responses["answer"].notna().any():
        scores = np.where([a is None for a in extracted_answers(pool)], NO_ANSWER, scores)
    return scores


def borda_vote(pool: Pool, context: Context) -> Outcome:
    """Self-certainty Borda: rank r (from 1, stable) votes ``(N - r + 1) ** power`` for its trace's answer."""
    answers = extracted_answers(pool)
    scores = _certainty_with_answers(pool, context.config)

    def choose(_, g: np.ndarray) -> int:
        ranked = sorted(range(len(g)), key=lambda i: -scores[g[i]])  # sorted() is stable: ties keep sample order
        weights = [(len(g) - r) ** context.config.borda_power for r in range(len(g))]
        pick = weighted_vote([answers[g[i]] for i in ranked], weights)
        return 0 if pick is None else ranked[pick]
    return picks(pool, choose)


by_score("entropy", lambda pool, context: -pool.per_response(trace_mean, "token_entropy"))
by_score("self-certainty", lambda pool, context: _certainty_with_answers(pool, context.config))
by_score("logprob", lambda pool, context: pool.per_response(trace_mean, "token_logprob"))
SELECTORS.add("deepconf-lowest", _deepconf(_lowest))
SELECTORS.add("deepconf-bottom10", _deepconf(lambda c, cfg: bottom_group_confidence(c, cfg.deepconf_window,
                                                                                    cfg.bottom_fraction)))
SELECTORS.add("deepconf-tail", _deepconf(lambda c, cfg: tail_confidence(c, cfg.deepconf_window)))
SELECTORS.add("deepconf-weighted-vote", lambda pool, context: deepconf_vote(pool, context, None))
SELECTORS.add("deepconf-filter10-vote", lambda pool, context: deepconf_vote(pool, context, context.config.filter_eta))
SELECTORS.add("self-certainty-borda", borda_vote)
