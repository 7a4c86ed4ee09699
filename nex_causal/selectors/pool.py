"""The responses of one cache grouped by prompt: what Best-of-N selection and model ranking read.

``responses`` is the cache's ``responses.parquet`` table (one row per response, in cache
order); ``cache`` (a ``SparseCache``) is needed only by what reads neurons. Groups keep the
order in which prompts first appear; inside a group, cache order. Every per-response view
(correctness, token statistics, activated key sets) is computed once and kept.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.novelty import activated_keys


def trace_mean(values: np.ndarray) -> float:
    """Mean of a per-token statistic over a trace; NaN for an empty trace."""
    return float(values.mean()) if len(values) else float("nan")


class Pool:
    """The responses of one cache grouped by prompt, with what selectors and scores read of them."""

    def __init__(self, responses: pd.DataFrame, cache: SparseCache | None = None):
        if "prompt_id" not in responses:
            raise NexError("responses table has no `prompt_id` column; it must come from `nex-causal capture`")
        if cache is not None and cache.n_responses != len(responses):
            raise NexError(f"cache holds {cache.n_responses} responses but its table has {len(responses)} rows; "
                           "recapture or repair the cache")
        self.responses = responses.reset_index(drop=True)
        self.cache = cache
        codes, self.prompt_ids = pd.factorize(self.responses["prompt_id"], sort=False)
        order = np.argsort(codes, kind="stable")
        self.groups = np.split(order, np.cumsum(np.bincount(codes))[:-1])
        self._memo: dict[Hashable, Any] = {}

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per pool and ``key`` (views several readers share)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @classmethod
    def from_cache(cls, cache: SparseCache) -> Pool:
        """The pool of a cache written by capture (its arrays plus ``responses.parquet``)."""
        if cache.responses is None:
            raise NexError(f"cache {cache.path} has no responses.parquet; selection needs the capture's "
                           "response table")
        return cls(cache.responses, cache)

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

    def per_response(self, score: Callable[[np.ndarray], float], column: str) -> np.ndarray:
        """``score`` of each response's ``column`` token statistics."""
        return np.array([score(v) for v in self.token_column(column)])

    def require_cache(self) -> SparseCache:
        if self.cache is None:
            raise NexError("no activation cache given; neuron-based selectors need the SparseCache")
        return self.cache

    @cached_property
    def key_sets(self) -> list[np.ndarray]:
        """S_r: the activated keys of each whole response (base view)."""
        c = self.require_cache()
        ptr = np.asarray(c.base_row_ptr)
        return [activated_keys(c.base_keys[ptr[r]:ptr[r + 1]], c.base_w_sum[ptr[r]:ptr[r + 1]])
                for r in range(c.n_responses)]

    def early(self, tokens: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Key sets and token counts of each response's rows that lie in its first ``tokens`` tokens.

        A row is used when its whole token span is inside the prefix; the first row always is.
        """
        return self.memo(("early", tokens), lambda: self._early(tokens))

    def _early(self, tokens: int) -> tuple[list[np.ndarray], np.ndarray]:
        c = self.require_cache()
        sample_ptr, row_ptr = np.asarray(c.sample_row_ptr), np.asarray(c.row_ptr)
        token_ptr = np.asarray(c.token_row_ptr)
        sets, counts = [], np.zeros(c.n_responses, np.int64)
        for r in range(c.n_responses):
            first, stop = sample_ptr[r], sample_ptr[r + 1]
            if stop == first:
                sets.append(np.empty(0, np.uint32))
                continue
            ends = token_ptr[first + 1:stop + 1] - token_ptr[first]
            last = first + max(1, int(np.searchsorted(ends, tokens, side="right")))
            lo, hi = row_ptr[first], row_ptr[last]
            sets.append(activated_keys(c.keys[lo:hi], c.w_sum[lo:hi]))
            counts[r] = token_ptr[last] - token_ptr[first]
        return sets, counts
