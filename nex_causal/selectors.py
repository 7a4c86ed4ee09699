"""Best-of-N selection: pick one of a prompt's N sampled responses without labels.

Each selector sees the N responses of one prompt (the rows of ``responses.parquet`` that
share a ``prompt_id``, with their activation cache) and returns the index of the one it
keeps; its accuracy is the mean over prompts of ``correct`` of the kept response, with a
percentile-bootstrap interval over prompts (one resample shared by all selectors). The
definitions are NEX_METHOD sections 6 and 8:

- NEX: highest Good-Mass Fraction, weights learned on the same unlabeled cache
  (``nex-self``) or given from elsewhere (``nex-cross``).
- NAD (neuron agreement): with S_r the response's activated key set, MinAct (smallest
  |S_r|), Jaccard medoid, kNN-medoid, DBSCAN-medoid and consensus-min (the smallest |S_r|
  among the picks of those three medoids, as in NAD's release); each again on the rows
  within the first ``early_tokens`` (32) generated tokens, the early decision (``@early``).
- Output-based: lowest mean token entropy, highest self-certainty, highest DeepConf
  lowest-group / bottom-10% / tail confidence, highest mean log-probability.
- Answer-based: majority vote over extracted answers (self-consistency).
- Baselines: ``random`` (a uniform pick; per prompt, the mean over ``n_random_seeds``
  seeded draws, so its expectation is Avg@N), ``avg@n`` (mean accuracy of the N samples)
  and ``oracle`` (any sample correct).

Conventions: a response's score that is undefined (NaN) never wins, and ties go to the
lowest sample index, so every pick is deterministic. "Tokens" are the generated tokens a
selector reads to make its pick, averaged over prompts: all N traces for full-trace
selectors, the early rows for ``@early`` selectors, none for ``random``; ``avg@n`` makes no
pick (NaN) and ``oracle`` reads every trace. A selector whose input is missing (no token
statistics, no extracted answers, no weights) is reported as skipped with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.novelty import activated_keys
from nex_causal.stats import bootstrap, weighted_mean

DEEPCONF_K = 20  # top-k of DeepConf's token confidence; capture stores the sum of the top 20


# --- per-response scores on token statistics -------------------------------------------

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


def argmax_pick(scores: np.ndarray) -> int:
    """Index of the highest score; NaN never wins; ties and all-NaN go to the lowest index."""
    scores = np.asarray(scores, dtype=np.float64)
    return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


# --- neuron-agreement (NAD) choices on key sets ------------------------------------------

def jaccard_distances(key_sets: Sequence[np.ndarray]) -> np.ndarray:
    """``D[r, s] = 1 - |S_r & S_s| / |S_r | S_s|`` for sets of unique keys (0 between two empty sets).

    All intersections come from one sparse product of the key-by-response membership matrix.
    """
    sizes = np.array([len(s) for s in key_sets], np.int64)
    keys = np.concatenate(key_sets).astype(np.int64) if len(key_sets) else np.empty(0, np.int64)
    member = sparse.csc_matrix((np.ones(len(keys)), keys, np.concatenate([[0], np.cumsum(sizes)])),
                               shape=(int(keys.max(initial=-1)) + 1, len(key_sets)))
    inter = (member.T @ member).toarray()
    union = sizes[:, None] + sizes[None, :] - inter
    return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)


def medoid(distances: np.ndarray) -> int:
    """The response with the least mean distance to the others."""
    return int(np.argmin(distances.mean(axis=1)))


def knn_medoid(distances: np.ndarray, k: int = 3) -> int:
    """The response whose ``k`` most similar other responses are, on average, most similar."""
    n = len(distances)
    if n == 1:
        return 0
    similarity = 1.0 - distances
    np.fill_diagonal(similarity, -np.inf)  # a response is not its own neighbour
    top = -np.sort(-similarity, axis=1)[:, :min(k, n - 1)]
    return int(np.argmax(top.mean(axis=1)))


def dbscan_medoid(distances: np.ndarray, *, quantile: float = 0.3, min_samples: int = 3) -> int:
    """Medoid of the largest DBSCAN cluster; the plain medoid when no cluster forms.

    ``eps`` is the ``quantile`` of the off-diagonal distances (floored just above 0 so that
    identical responses still count as neighbours). Equal-sized clusters: the one DBSCAN
    found first (it holds the lowest index).
    """
    from sklearn.cluster import DBSCAN

    n = len(distances)
    if n < min_samples:
        return medoid(distances)
    eps = max(float(np.quantile(distances[np.triu_indices(n, 1)], quantile)), 1e-12)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(distances).labels_
    if (labels < 0).all():
        return medoid(distances)
    members = np.flatnonzero(labels == np.argmax(np.bincount(labels[labels >= 0])))
    return int(members[medoid(distances[np.ix_(members, members)])])


def min_act(sizes: np.ndarray) -> int:
    """The response that activated the fewest neurons (NAD MinAct)."""
    return int(np.argmin(sizes))


def consensus_min(distances: np.ndarray, sizes: np.ndarray, k: int = 3) -> int:
    """Of the medoid, kNN-medoid and DBSCAN-medoid, the one with the fewest activated neurons."""
    candidates = sorted({medoid(distances), knn_medoid(distances, k), dbscan_medoid(distances)})
    return candidates[min_act(np.asarray(sizes)[candidates])]


# --- answer-based -----------------------------------------------------------------------

def majority_vote(answers: Sequence[str | None]) -> int | None:
    """First response giving the most frequent extracted answer; None when none was extracted.

    Answers are compared after stripping whitespace; a tie between answers goes to the one
    that appears first in sample order.
    """
    votes: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        if isinstance(answer, str) and answer.strip():
            votes.setdefault(answer.strip(), []).append(i)
    if not votes:
        return None
    return max(votes.values(), key=len)[0]  # max keeps the first of equal counts


# --- one cache's responses, grouped by prompt ---------------------------------------------

@dataclass(frozen=True)
class SelectionConfig:
    """Knobs of the selectors (defaults: the papers' values, NEX_METHOD section 8)."""

    early_tokens: int = 32
    deepconf_window: int = 2048
    bottom_fraction: float = 0.1
    knn_k: int = 3
    n_random_seeds: int = 100
    seed: int = 0
    weights: np.ndarray | None = None  # NEX weights learned elsewhere, for ``nex-cross``
    progress: bool = False  # progress bars while NEX learns and scores


def clean_key_set(keys: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """S: the sorted unique keys left after cleaning (NEX_METHOD 1: positive finite mass, not layer 255)."""
    return activated_keys(keys, mass)


class Pool:
    """The responses of one cache grouped by prompt, with what the selectors read of them.

    ``responses`` is the cache's ``responses.parquet`` table (one row per response, in cache
    order); ``cache`` (a ``SparseCache``) is needed only by the neuron-based selectors.
    Groups keep the order in which prompts first appear; inside a group, cache order.
    """

    def __init__(self, responses: pd.DataFrame, cache: SparseCache | None = None,
                 config: SelectionConfig = SelectionConfig()):
        if "prompt_id" not in responses:
            raise NexError("responses table has no `prompt_id` column; it must come from `nex-causal capture`")
        if cache is not None and cache.n_responses != len(responses):
            raise NexError(f"cache holds {cache.n_responses} responses but its table has {len(responses)} rows; "
                           "recapture or repair the cache")
        self.responses = responses.reset_index(drop=True)
        self.cache = cache
        self.config = config
        codes, self.prompt_ids = pd.factorize(self.responses["prompt_id"], sort=False)
        order = np.argsort(codes, kind="stable")
        self.groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])

    @classmethod
    def from_cache(cls, cache: SparseCache, config: SelectionConfig = SelectionConfig()) -> Pool:
        """The pool of a cache written by capture (its arrays plus ``responses.parquet``)."""
        if cache.responses is None:
            raise NexError(f"cache {cache.path} has no responses.parquet; selection needs the capture's "
                           "response table")
        return cls(cache.responses, cache, config)

    def __len__(self) -> int:
        return len(self.groups)

    @cached_property
    def correct(self) -> np.ndarray:
        """Whether each response is correct (needed to evaluate, never to select)."""
        column = self.responses.get("correct")
        if column is None or column.isna().any():
            missing = len(self.responses) if column is None else int(column.isna().sum())
            raise NexError(f"{missing} responses have no `correct` label; selection accuracy needs "
                           "prompts with gold answers (a task set with targets)")
        return column.to_numpy(dtype=bool)

    @cached_property
    def n_tokens(self) -> np.ndarray:
        return self.responses["n_tokens"].to_numpy(dtype=np.int64)

    def token_column(self, name: str) -> list[np.ndarray]:
        """One array per response of a per-token statistic column."""
        if name not in self.responses:
            raise NexError(f"responses table has no `{name}` column (token statistics); recapture to get it")
        return [np.asarray(v, dtype=np.float64) for v in self.responses[name]]

    def require_cache(self) -> SparseCache:
        if self.cache is None:
            raise NexError("no activation cache given; neuron-based selectors need the SparseCache")
        return self.cache

    @cached_property
    def key_sets(self) -> list[np.ndarray]:
        """S_r: the activated keys of each whole response (base view)."""
        c = self.require_cache()
        ptr = np.asarray(c.base_row_ptr)
        return [clean_key_set(c.base_keys[ptr[r]:ptr[r + 1]], c.base_w_sum[ptr[r]:ptr[r + 1]])
                for r in range(c.n_responses)]

    @cached_property
    def early(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Key sets and token counts of each response's rows that lie in its first ``early_tokens``.

        A row is used when its whole token span is inside the prefix; the first row always is.
        """
        c = self.require_cache()
        sample_ptr, row_ptr = np.asarray(c.sample_row_ptr), np.asarray(c.row_ptr)
        token_ptr = np.asarray(c.token_row_ptr)
        sets, tokens = [], np.zeros(c.n_responses, np.int64)
        for r in range(c.n_responses):
            first, stop = sample_ptr[r], sample_ptr[r + 1]
            if stop == first:
                sets.append(np.empty(0, np.uint32))
                continue
            ends = token_ptr[first + 1:stop + 1] - token_ptr[first]
            last = first + max(1, int(np.searchsorted(ends, self.config.early_tokens, side="right")))
            lo, hi = row_ptr[first], row_ptr[last]
            sets.append(clean_key_set(c.keys[lo:hi], c.w_sum[lo:hi]))
            tokens[r] = token_ptr[last] - token_ptr[first]
        return sets, tokens

    @cached_property
    def distances(self) -> list[np.ndarray]:
        return [jaccard_distances([self.key_sets[r] for r in g]) for g in self.groups]

    @cached_property
    def early_distances(self) -> list[np.ndarray]:
        return [jaccard_distances([self.early[0][r] for r in g]) for g in self.groups]

    def per_response(self, score: Callable[[np.ndarray], float], column: str) -> np.ndarray:
        """``score`` of each response's ``column`` token statistics."""
        return np.array([score(v) for v in self.token_column(column)])


@dataclass(frozen=True)
class Outcome:
    """Per prompt: the accuracy a selector achieves (0/1 for one pick) and tokens it read."""

    value: np.ndarray
    tokens: np.ndarray


def _picks(pool: Pool, choose: Callable[[int, np.ndarray], int], tokens: np.ndarray | None = None) -> Outcome:
    """Outcome of choosing ``choose(group number, response positions)`` in every group."""
    correct = pool.correct
    chosen = np.array([g[choose(i, g)] for i, g in enumerate(pool.groups)])
    read = pool.n_tokens if tokens is None else tokens
    return Outcome(correct[chosen].astype(np.float64), np.array([read[g].sum() for g in pool.groups]))


def _by_score(scores: Callable[[Pool], np.ndarray]) -> Callable[[Pool], Outcome]:
    """A selector keeping the highest-scoring response of each group."""
    def run(pool: Pool) -> Outcome:
        values = scores(pool)
        return _picks(pool, lambda _, g: argmax_pick(values[g]))
    return run


def _nad(choose: Callable[[np.ndarray, np.ndarray, SelectionConfig], int],
         early: bool) -> Callable[[Pool], Outcome]:
    """A NAD selector: ``choose(distances, sizes, config)`` on the full or the early key sets."""
    def run(pool: Pool) -> Outcome:
        sets, tokens = pool.early if early else (pool.key_sets, None)
        distances = pool.early_distances if early else pool.distances
        sizes = np.array([len(s) for s in sets])
        return _picks(pool, lambda i, g: choose(distances[i], sizes[g], pool.config), tokens)
    return run


def _nex_scores(pool: Pool, weights: np.ndarray | None) -> np.ndarray:
    from nex_causal.nex import learn_weights, score_responses

    cache, progress = pool.require_cache(), pool.config.progress
    return score_responses(cache, learn_weights(cache, progress=progress) if weights is None else weights,
                       progress=progress)


def _nex_cross(pool: Pool) -> np.ndarray:
    if pool.config.weights is None:
        raise NexError("no NEX weights from another cache given (--weights); nothing to cross-calibrate with")
    return _nex_scores(pool, pool.config.weights)


def _deepconf(reduce: Callable[[np.ndarray, SelectionConfig], float]) -> Callable[[Pool], np.ndarray]:
    """Per-response DeepConf score ``reduce(C, config)`` of C_t = -(top-20 log-prob sum) / 20."""
    def scores(pool: Pool) -> np.ndarray:
        return pool.per_response(lambda s: reduce(-s / DEEPCONF_K, pool.config), "token_top20_logprob_sum")
    return scores


def trace_mean(values: np.ndarray) -> float:
    """Mean of a per-token statistic over a trace; NaN for an empty trace."""
    return float(values.mean()) if len(values) else float("nan")


def _majority(pool: Pool) -> Outcome:
    if "answer" not in pool.responses or pool.responses["answer"].isna().all():
        raise NexError("no extracted answers in the responses table; majority vote needs a task with answers")
    answers = pool.responses["answer"].to_numpy(dtype=object)

    def choose(_, g: np.ndarray) -> int:
        pick = majority_vote(answers[g])
        return 0 if pick is None else pick  # no answer in the group: nothing to vote on
    return _picks(pool, choose)


def _random(pool: Pool) -> Outcome:
    """Per prompt, the accuracy of ``n_random_seeds`` uniform picks, averaged."""
    rng = np.random.default_rng(pool.config.seed)
    correct = pool.correct
    value = np.array([correct[g[rng.integers(0, len(g), pool.config.n_random_seeds)]].mean()
                      for g in pool.groups])
    return Outcome(value, np.zeros(len(pool)))


def _reference(reduce: Callable[[np.ndarray], float], reads_all: bool) -> Callable[[Pool], Outcome]:
    """A reference row: ``reduce`` of each prompt's ``correct`` (no pick is made)."""
    def run(pool: Pool) -> Outcome:
        value = np.array([reduce(pool.correct[g]) for g in pool.groups], dtype=np.float64)
        tokens = (np.array([pool.n_tokens[g].sum() for g in pool.groups], dtype=np.float64) if reads_all
                  else np.full(len(pool), np.nan))
        return Outcome(value, tokens)
    return run


def _nad_family() -> dict[str, Callable[[Pool], Outcome]]:
    """The five NAD choices, on whole responses and on their early rows."""
    choices = {
        "minact": lambda d, sizes, config: min_act(sizes),
        "medoid": lambda d, sizes, config: medoid(d),
        "knn-medoid": lambda d, sizes, config: knn_medoid(d, config.knn_k),
        "dbscan-medoid": lambda d, sizes, config: dbscan_medoid(d),
        "consensus-min": lambda d, sizes, config: consensus_min(d, sizes, config.knn_k),
    }
    out = {f"nad-{name}": _nad(c, early=False) for name, c in choices.items()}
    out.update({f"nad-{name}@early": _nad(c, early=True) for name, c in choices.items()})
    return out


SELECTORS: dict[str, Callable[[Pool], Outcome]] = {
    "nex-self": _by_score(lambda pool: _nex_scores(pool, None)),
    "nex-cross": _by_score(_nex_cross),
    **_nad_family(),
    "entropy": _by_score(lambda pool: -pool.per_response(trace_mean, "token_entropy")),
    "self-certainty": _by_score(lambda pool: pool.per_response(trace_mean, "token_kl_uniform")),
    "deepconf-lowest": _by_score(_deepconf(lambda c, cfg: lowest_group_confidence(c, cfg.deepconf_window))),
    "deepconf-bottom10": _by_score(_deepconf(
        lambda c, cfg: bottom_group_confidence(c, cfg.deepconf_window, cfg.bottom_fraction))),
    "deepconf-tail": _by_score(_deepconf(lambda c, cfg: tail_confidence(c, cfg.deepconf_window))),
    "logprob": _by_score(lambda pool: pool.per_response(trace_mean, "token_logprob")),
    "majority-vote": _majority,
    "random": _random,
    "avg@n": _reference(np.mean, reads_all=False),
    "oracle": _reference(np.max, reads_all=True),
}


def select(pool: Pool, names: Sequence[str] | None = None, *, n_boot: int = 1000, level: float = 0.95,
           seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Run the selectors ``names`` (default: all) on ``pool``; one table row per selector.

    Columns: selector, accuracy, ci_low, ci_high, tokens_per_prompt, n_prompts, status
    (``ok`` or ``skipped: <reason>``). The bootstrap draws the same prompt resamples for
    every selector (``seed``), so their intervals are comparable.
    """
    names = list(SELECTORS) if names is None else list(names)
    unknown = sorted(set(names) - set(SELECTORS))
    if unknown:
        raise NexError(f"unknown selector(s) {', '.join(unknown)}; choose from {', '.join(SELECTORS)}")
    pool.correct  # fail early, once, when the cache cannot be evaluated
    rows = []
    for name in tqdm(names, desc="selectors", disable=not progress):
        row = {"selector": name, "accuracy": np.nan, "ci_low": np.nan, "ci_high": np.nan,
               "tokens_per_prompt": np.nan, "n_prompts": len(pool), "status": "ok"}
        try:
            outcome = SELECTORS[name](pool)
        except NexError as err:
            row["status"] = f"skipped: {err}"
        else:
            ci = bootstrap(weighted_mean(outcome.value), len(pool), n_boot=n_boot, level=level, seed=seed)
            row.update(accuracy=float(ci.estimate), ci_low=float(ci.low), ci_high=float(ci.high),
                       tokens_per_prompt=float(outcome.tokens.mean()))
        rows.append(row)
    return pd.DataFrame(rows)


def selection_table(caches: Sequence[str | Path], config: SelectionConfig = SelectionConfig(),
                    names: Sequence[str] | None = None, *, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """``select`` on each cache directory; the rows of every cache, with a leading ``cache`` column."""
    tables = []
    for cache_dir in caches:
        pool = Pool.from_cache(SparseCache.open(cache_dir), config)
        table = select(pool, names, n_boot=n_boot, level=level, seed=seed, progress=progress)
        tables.append(table.assign(cache=str(cache_dir)))
    table = pd.concat(tables, ignore_index=True)
    return table[["cache", *table.columns.drop("cache")]]
