"""Good-Mass Fraction, the model-level NEX score and its log-gap (NEX_METHOD section 6).

GMF(r) = sum_n M[n] max(w_n, 0) / sum_n M[n] |w_n| over the response's base view: the
share of its weighted mass that sits on effective neurons. It is 0 when no weighted mass
is left and NaN when the response has no usable mass at all. The base view is cleaned like
a row (layer 255 dropped, non-finite or negative mass counted as 0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import SparseCache, out_of_range
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, write_json
from nex_causal.nex.credit import check_weights
from nex_causal.nex.novelty import usable_entries

__all__ = ["good_mass_fraction", "gmf_per_response", "score_cache", "nex_score", "log_gap", "write_scores"]

_CHUNK_ENTRIES = 1 << 19  # base-view entries per step: bounds memory, and is ~3x faster than 8M (cache)


def gmf_per_response(keys: np.ndarray, mass: np.ndarray, ptr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """GMF of each response of a base view in CSR form (response r owns entries [ptr[r], ptr[r+1]))."""
    weights = check_weights(weights)
    ptr = np.asarray(ptr, np.int64)
    keys, mass = np.asarray(keys), np.asarray(mass, np.float64)
    if keys.shape != mass.shape or ptr[-1] - ptr[0] != len(keys) or (np.diff(ptr) < 0).any():
        raise NexError(f"a base view needs keys and mass of one length ({keys.shape}, {mass.shape}) and "
                       f"non-decreasing pointers spanning them ({ptr[0]}..{ptr[-1]})")
    if out_of_range(keys).any():
        raise NexError("base-view keys lie beyond the 2**22 key space; keys are packed (layer << 16) | unit")
    keep = usable_entries(keys, mass)
    m = np.where(keep, mass, 0.0)
    w = weights[np.where(keep, keys, 0)].astype(np.float64)
    response = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr - ptr[0]))
    total, good, weighted = (np.bincount(response, m * part, minlength=len(ptr) - 1).astype(np.float64)
                             for part in (1.0, np.maximum(w, 0.0), np.abs(w)))  # (int64 when empty)
    gmf = np.divide(good, weighted, out=np.zeros_like(good), where=weighted > 0)
    gmf[total <= 0] = np.nan
    return gmf


def good_mass_fraction(keys: np.ndarray, mass: np.ndarray, weights: np.ndarray) -> float:
    """GMF of one response from its base view (keys, mass M[n])."""
    return float(gmf_per_response(keys, mass, np.array([0, len(keys)]), weights)[0])


def score_cache(cache: SparseCache, weights: np.ndarray, progress: bool = True) -> np.ndarray:
    """GMF of every response of ``cache`` (float64, NaN where unscorable), in cache order."""
    weights = check_weights(weights)
    ptr = np.asarray(cache.base_row_ptr)
    out = np.empty(cache.n_responses)
    start = 0
    with tqdm(total=cache.n_responses, desc="nex score", unit="resp", disable=not progress,
              mininterval=0.5) as bar:
        while start < cache.n_responses:
            stop = int(np.searchsorted(ptr, ptr[start] + _CHUNK_ENTRIES, side="right")) - 1
            stop = min(max(stop, start + 1), cache.n_responses)
            lo, hi = ptr[start], ptr[stop]
            out[start:stop] = gmf_per_response(cache.base_keys[lo:hi], cache.base_w_sum[lo:hi],
                                               ptr[start:stop + 1], weights)
            bar.update(stop - start)
            start = stop
    return out


def nex_score(gmf: np.ndarray) -> float:
    """A model's NEX: the mean GMF of its responses, NaNs ignored (NaN when none is scored)."""
    gmf = np.asarray(gmf, np.float64)
    scored = gmf[np.isfinite(gmf)]
    return float(scored.mean()) if len(scored) else float("nan")


def log_gap(nex: float) -> float:
    """-log10(1 - NEX), which spreads scores crowded near 1 (inf at NEX = 1, NaN for NaN)."""
    if np.isnan(nex):
        return float("nan")
    if not 0.0 <= nex <= 1.0:
        raise NexError(f"NEX is a mean of fractions in [0, 1], got {nex}")
    with np.errstate(divide="ignore"):
        return float(-np.log10(1.0 - nex))


def write_scores(output_dir: str | os.PathLike, gmf: np.ndarray, *, log_gap_output: bool = False,
                 **fields: Any) -> dict[str, Any]:
    """Write ``response_scores.npy`` (float32 GMF) and ``summary.json`` into ``output_dir``.

    The summary holds ``n_responses``, ``n_scored_responses``, ``nex_score`` (and ``log_gap``
    when asked) plus ``fields``; non-finite numbers are written as null. Returns the summary.
    """
    output_dir = Path(output_dir)
    nex = nex_score(gmf)
    summary = {"n_responses": len(gmf), "n_scored_responses": int(np.isfinite(gmf).sum()), "nex_score": nex,
               **({"log_gap": log_gap(nex)} if log_gap_output else {}), **fields}
    with atomic_path(output_dir / "response_scores.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(gmf, np.float32))
    write_json(output_dir / "summary.json",
               {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in summary.items()})
    return summary
