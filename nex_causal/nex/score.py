"""Good-Mass Fraction, the model-level NEX score and its log-gap (NEX_METHOD section 6).

GMF(r) = sum_n M[n] max(w_n, 0) / sum_n M[n] |w_n| over the response's base view: the
share of its weighted mass that sits on effective neurons. As in the reference release,
the base view is cleaned like a row (layer 255 dropped, non-finite or negative mass counted
as 0), both sums are float32, GMF is 0 when no weighted mass is left, and NaN for a response
with no usable mass or with a key beyond the 2**22 key space.

``write_scores`` writes the reference's outputs: ``response_scores.npy`` and a
``summary.json`` whose ``nex_score`` is the mean GMF, or, with ``log_gap_output``, the
log-gap -log10(max(1 - NEX, 1e-12)) (then ``gmf_mean`` keeps the mean beside it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, RESERVED_LAYER, SparseCache
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, write_json
from nex_causal.nex.novelty import clean_mass
from nex_causal.nex.weights import check_weights

LOG_GAP_FLOOR = 1e-12  # the reference clips 1 - NEX here before the log


def good_mass_fraction(keys: np.ndarray, mass: np.ndarray, weights: np.ndarray) -> float:
    """GMF of one response from its base view (keys, mass M[n]); NaN when it has no usable mass."""
    return _gmf(np.asarray(keys), np.asarray(mass), *_signed(check_weights(weights)))


def _signed(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(weights, 0.0, None), np.abs(weights)


def _gmf(keys: np.ndarray, mass: np.ndarray, positive: np.ndarray, absolute: np.ndarray) -> float:
    keys = keys.astype(np.uint32, copy=False)
    kept = (keys >> 16) != RESERVED_LAYER
    keys, mass = keys[kept], clean_mass(mass[kept])
    if keys.size == 0 or int(keys.max()) >= KEY_SPACE or float(np.sum(mass)) <= 0.0:
        return float("nan")
    keys = keys.astype(np.int64)
    weighted = float(np.sum(mass * absolute[keys]))
    return float(np.sum(mass * positive[keys])) / weighted if weighted > 0.0 else 0.0


def score_responses(cache: SparseCache, weights: np.ndarray, progress: bool = True) -> np.ndarray:
    """GMF of every response of ``cache`` (float32, NaN where unscorable), in cache order."""
    positive, absolute = _signed(check_weights(weights))
    ptr = np.asarray(cache.base_row_ptr)
    out = np.full(cache.n_responses, np.nan, np.float32)
    for r in tqdm(range(cache.n_responses), desc="nex score", unit="resp", disable=not progress,
                  mininterval=0.5):
        lo, hi = ptr[r], ptr[r + 1]
        if hi > lo:
            out[r] = _gmf(np.asarray(cache.base_keys[lo:hi]), np.asarray(cache.base_w_sum[lo:hi]),
                          positive, absolute)
    return out


def nex_score(gmf: np.ndarray) -> float:
    """A model's NEX: the mean GMF of its responses, NaNs ignored (NaN when none is scored)."""
    gmf = np.asarray(gmf)
    scored = gmf[np.isfinite(gmf)]
    return float(np.mean(scored)) if scored.size else float("nan")


def score_cache(cache: SparseCache, weights: np.ndarray, progress: bool = True) -> float:
    """NEX of ``cache``: the mean per-response GMF (the reference's ``score_cache``)."""
    return nex_score(score_responses(cache, weights, progress))


def log_gap(nex: float) -> float:
    """-log10(max(1 - NEX, 1e-12)), which spreads scores crowded near 1 (NaN for NaN)."""
    if np.isnan(nex):
        return float("nan")
    if not 0.0 <= nex <= 1.0:
        raise NexError(f"NEX is a mean of fractions in [0, 1], got {nex}")
    return float(-np.log10(max(1.0 - nex, LOG_GAP_FLOOR)))


def write_scores(output_dir: str | os.PathLike, gmf: np.ndarray, *, log_gap_output: bool = False,
                 **fields: Any) -> dict[str, Any]:
    """Write ``response_scores.npy`` and ``summary.json`` into ``output_dir`` as the reference does.

    The summary holds ``n_responses``, ``n_scored_responses`` and ``nex_score`` (the mean GMF,
    or its log-gap with ``log_gap_output``, when ``gmf_mean`` holds the mean), plus
    ``fields``; non-finite numbers are written as null. Returns the summary.
    """
    output_dir = Path(output_dir)
    mean = nex_score(gmf)
    summary: dict[str, Any] = {"n_responses": len(gmf), "n_scored_responses": int(np.isfinite(gmf).sum())}
    if log_gap_output:
        summary.update(nex_score=log_gap(float(np.clip(mean, 0.0, 1.0))) if np.isfinite(mean) else mean,
                       gmf_mean=mean)
    else:
        summary["nex_score"] = mean
    summary.update(fields)
    with atomic_path(output_dir / "response_scores.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(gmf, np.float32))
    write_json(output_dir / "summary.json",
               {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in summary.items()})
    return summary
