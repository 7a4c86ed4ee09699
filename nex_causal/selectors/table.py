"""The selection table: every selector's Best-of-N accuracy on one or more caches, with bootstrap intervals.

Accuracy is the mean over prompts of ``correct`` of the kept response, with a BCa
bootstrap over prompts (one resample shared by all selectors, so their intervals compare);
with several caches, pooled rows follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.calibration import Calibrations, check_modes
from nex_causal.nex.config import NexConfig
from nex_causal.selectors.base import SELECTORS, Context, Outcome
from nex_causal.selectors.config import SelectionConfig
from nex_causal.selectors.pool import Pool
from nex_causal.stats import bootstrap, weighted_mean

POOLED = "pooled"  # the ``cache`` of selection_table's rows over the prompts of every cache


def chosen(config: SelectionConfig) -> list[str]:
    """The selectors that run: those named, or every one with the NEX rows of ``config.calibration`` only."""
    if config.selectors is not None:
        return SELECTORS.check(config.selectors)
    modes = check_modes(config.calibration)
    return [n for n in SELECTORS if not n.startswith("nex-") or n.removeprefix("nex-") in modes]


def _outcomes(pool: Pool, config: SelectionConfig, calibrations: Calibrations, name: str, progress: bool
              ) -> dict[str, Outcome | str]:
    """Each selector's per-prompt outcome on ``pool`` (cache ``name`` of ``calibrations``), or why it was skipped."""
    names = chosen(config)
    pool.correct  # fail early, once, when the cache cannot be evaluated
    context = Context(config, calibrations, name, progress)
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
           nex: NexConfig = NexConfig(), progress: bool = False) -> pd.DataFrame:
    """Run ``config.selectors`` (default: all) on ``pool``; one table row per selector.

    Columns: selector, accuracy, ci_low, ci_high, tokens_per_prompt, n_prompts, status
    (``ok`` or ``skipped: <reason>``), note (what qualifies a result, e.g. DeepConf scores
    that are whole-trace means because every trace is shorter than the window). The
    bootstrap draws the same prompt resamples for every selector (``config.seed``), so their
    intervals are comparable. NEX runs under ``nex``; ``weights`` learned elsewhere serve
    ``nex-cross`` (a lone cache has no other caches to cross-calibrate with).
    """
    calibrations = Calibrations({} if pool.cache is None else {"cache": pool.cache}, nex, given=weights,
                                progress=progress)
    table = _rows(_outcomes(pool, config, calibrations, "cache", progress), config)
    return table.assign(n_prompts=len(pool))


def selection_table(caches: Sequence[str | Path], config: SelectionConfig = SelectionConfig(), *,
                    weights: np.ndarray | None = None, nex: NexConfig = NexConfig(),
                    learned: Mapping[str, np.ndarray] | None = None, progress: bool = False) -> pd.DataFrame:
    """``select`` on each cache directory; the rows of every cache, with a leading ``cache`` column.

    With several caches, rows with ``cache == POOLED`` follow: per selector the accuracy over
    the prompts of every cache together, its interval from a bootstrap over those prompts
    (the mean over caches when they hold as many prompts each). A selector skipped on some
    cache is pooled over the others, which its note says.

    NEX runs under ``nex`` with the calibrations of ``config.calibration`` over these caches
    (``nex.calibration``); ``learned`` (cache directory -> weights) hands in self-calibrated
    weights already learned with ``nex`` (the run's nex stage), ``weights`` serve ``nex-cross``
    when there is a single cache.
    """
    opened = {str(c): SparseCache.open(c) for c in caches}
    calibrations = Calibrations(opened, nex, weights=learned, given=weights, progress=progress)
    tables, per_cache = [], []
    for cache_dir, cache in opened.items():
        pool = Pool.from_cache(cache)
        outcomes = _outcomes(pool, config, calibrations, cache_dir, progress)
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
