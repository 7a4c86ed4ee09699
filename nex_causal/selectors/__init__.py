"""Best-of-N selection: pick one of a prompt's N sampled responses without labels.

Each selector sees the N responses of one prompt (the rows of ``responses.parquet`` that
share a ``prompt_id``, with their activation cache) and keeps one; its accuracy is the mean
over prompts of ``correct`` of the kept response, with a percentile-bootstrap interval over
prompts (one resample shared by all selectors). The definitions are NEX_METHOD sections 6
and 8, one family a module:

    neurons      nex-self, nex-cross; NAD minact / medoid / knn-medoid / dbscan-medoid /
                 consensus-min, each also @early
    confidence   entropy, logprob; self-certainty, self-certainty-borda; deepconf-lowest /
                 -bottom10 / -tail, deepconf-weighted-vote, deepconf-filter10-vote
    answers      majority-vote (and the weighted vote the voting selectors cast)
    references   random, avg@n, oracle

A new selector is one function registered in ``SELECTORS`` (``selectors.base``) by the
module of its family. "Tokens" are the generated tokens a selector reads to make its pick,
averaged over prompts. A selector whose input is missing (no token statistics, no
extracted answers, no weights) is reported as skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.pool import Pool
from nex_causal.selectors import answers, confidence, neurons, references  # noqa: F401  (registration)
from nex_causal.selectors.base import SELECTORS, Context, Outcome, SelectionConfig
from nex_causal.stats import bootstrap, weighted_mean

__all__ = ["POOLED", "SELECTORS", "Pool", "SelectionConfig", "select", "selection_table"]

POOLED = "pooled"  # the ``cache`` of selection_table's rows over the prompts of every cache


def _outcomes(pool: Pool, config: SelectionConfig, weights: np.ndarray | None, progress: bool
              ) -> dict[str, Outcome | str]:
    """Each selector's per-prompt outcome on ``pool``, or the reason it was skipped."""
    names = SELECTORS.check(config.selectors if config.selectors is not None else SELECTORS)
    pool.correct  # fail early, once, when the cache cannot be evaluated
    context = Context(config, weights, progress)
    out: dict[str, Outcome | str] = {}
    for name in tqdm(names, desc="selectors", disable=not progress):
        try:
            out[name] = SELECTORS[name](pool, context)
        except NexError as err:
            out[name] = f"skipped: {err}"
    return out


def _rows(outcomes: dict[str, Outcome | str], config: SelectionConfig) -> pd.DataFrame:
    """One row per selector: accuracy with its bootstrap interval over the outcomes' prompts."""
    rows = []
    for name, outcome in outcomes.items():
        row = {"selector": name, "accuracy": np.nan, "ci_low": np.nan, "ci_high": np.nan,
               "tokens_per_prompt": np.nan, "n_prompts": np.nan, "status": "ok", "note": ""}
        if isinstance(outcome, str):
            row["status"] = outcome
        else:
            ci = bootstrap(weighted_mean(outcome.value), len(outcome.value), n_boot=config.n_boot,
                           level=config.level, seed=config.seed)
            row.update(accuracy=float(ci.estimate), ci_low=float(ci.low), ci_high=float(ci.high),
                       tokens_per_prompt=float(outcome.tokens.mean()), n_prompts=len(outcome.value),
                       note=outcome.note)
        rows.append(row)
    return pd.DataFrame(rows)


def select(pool: Pool, config: SelectionConfig = SelectionConfig(), *, weights: np.ndarray | None = None,
           progress: bool = False) -> pd.DataFrame:
    """Run ``config.selectors`` (default: all) on ``pool``; one table row per selector.

    Columns: selector, accuracy, ci_low, ci_high, tokens_per_prompt, n_prompts, status
    (``ok`` or ``skipped: <reason>``), note (what qualifies a result, e.g. DeepConf scores
    that are whole-trace means because every trace is shorter than the window). The
    bootstrap draws the same prompt resamples for every selector (``config.seed``), so their
    intervals are comparable. ``weights`` are NEX weights learned elsewhere, for ``nex-cross``.
    """
    table = _rows(_outcomes(pool, config, weights, progress), config)
    return table.assign(n_prompts=len(pool))


def selection_table(caches: Sequence[str | Path], config: SelectionConfig = SelectionConfig(), *,
                    weights: np.ndarray | None = None, progress: bool = False) -> pd.DataFrame:
    """``select`` on each cache directory; the rows of every cache, with a leading ``cache`` column.

    With several caches, rows with ``cache == POOLED`` follow: per selector the accuracy over
    the prompts of every cache together, its interval from a bootstrap over those prompts
    (the mean over caches when they hold as many prompts each). A selector skipped on some
    cache is pooled over the others, which its note says.
    """
    tables, per_cache = [], []
    for cache_dir in caches:
        pool = Pool.from_cache(SparseCache.open(cache_dir))
        outcomes = _outcomes(pool, config, weights, progress)
        per_cache.append(outcomes)
        tables.append(_rows(outcomes, config).assign(n_prompts=len(pool), cache=str(cache_dir)))
    if len(per_cache) > 1:
        pooled = {}
        for name in per_cache[0]:
            ran = [o[name] for o in per_cache if not isinstance(o[name], str)]
            if not ran:
                pooled[name] = per_cache[0][name]
                continue
            notes = sorted({o.note for o in ran if o.note})
            if len(ran) < len(per_cache):
                notes.append(f"pooled over the {len(ran)} of {len(per_cache)} caches where it ran")
            pooled[name] = Outcome(np.concatenate([o.value for o in ran]), np.concatenate([o.tokens for o in ran]),
                                   "; ".join(notes))
        tables.append(_rows(pooled, config).assign(cache=POOLED))
    table = pd.concat(tables, ignore_index=True)
    return table[["cache", *table.columns.drop("cache")]]
