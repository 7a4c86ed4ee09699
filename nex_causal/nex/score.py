"""Good-Mass Fraction, the model-level NEX score and its log-gap (NEX_METHOD section 6).

GMF(r) = sum_n M[n] max(w_n, 0) / sum_n M[n] |w_n| over the response's base view: the
share of its weighted mass that sits on effective neurons. As in the reference release,
the base view is cleaned like a row (layer 255 dropped, non-finite or negative mass counted
as 0), both sums are float32, GMF is 0 when no weighted mass is left, and NaN for a response
with no usable mass or with a key beyond the 2**22 key space.

Responses are scored a chunk at a time (``CHUNK_ENTRIES`` base-view entries), in worker
processes (``nex.workers``) when there are enough chunks, every float32 sum as ``np.sum``
takes it (``Segments``: the three sums of a chunk share one layout). A chunk's float16 mass
is read and cleaned in one lookup, and the weights are read once per entry (the random
reads over 2**22 weights are most of the time, ~10 ns an entry).

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
from nex_causal.cache.layout import FLOAT32_OF_FLOAT16
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, write_json
from nex_causal.nex.novelty import Segments, clean_mass
from nex_causal.nex.weights import check_weights
from nex_causal.nex.workers import check_workers, in_chunks

LOG_GAP_FLOOR = 1e-12  # the reference clips 1 - NEX here before the log
CHUNK_ENTRIES = 1 << 20  # base-view entries scored at once (about 40 MB of working arrays)
CLEAN_OF_FLOAT16 = clean_mass(FLOAT32_OF_FLOAT16)  # every float16 pattern as clean_mass cleans its float32 value


def good_mass_fraction(keys: np.ndarray, mass: np.ndarray, weights: np.ndarray) -> float:
    """GMF of one response from its base view (keys, mass M[n]); NaN when it has no usable mass."""
    keys = np.asarray(keys)
    return float(_gmf(keys, np.asarray(mass), np.array([len(keys)]), check_weights(weights))[0])


def _gmf(keys: np.ndarray, mass: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """GMF of consecutive responses whose base views lie back to back in ``keys``/``mass``, ``counts[r]``
    entries each (float64, NaN where unscorable), each float32 sum taken as the reference takes it."""
    good, weighted, scorable = mass_sums(keys, mass, counts, weights)
    out = np.full(len(counts), np.nan)
    out[scorable] = 0.0
    credited = scorable & (weighted > 0.0)
    out[credited] = good[credited] / weighted[credited]
    return out


def mass_sums(keys: np.ndarray, mass: np.ndarray, counts: np.ndarray,
              weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two sums of GMF for consecutive groups of entries (``counts[r]`` each): sum M max(w, 0) and sum M |w|
    (float32 sums as float64), and whether each group is scorable (some usable mass, no key beyond the key space)."""
    n = len(counts)
    mass = CLEAN_OF_FLOAT16.take(mass.view(np.uint16)) if mass.dtype == np.float16 else clean_mass(mass)
    scorable = np.ones(n, bool)
    if keys.size and keys.max() >= KEY_SPACE:  # layer-255 keys are dropped; one beyond leaves its response unscored
        response = np.repeat(np.arange(n), counts)
        kept = (keys >> 16) != RESERVED_LAYER
        keys, mass, response = keys[kept], mass[kept], response[kept]
        counts = np.bincount(response, minlength=n)
        beyond = keys >= KEY_SPACE
        scorable = np.bincount(response[beyond], minlength=n) == 0
        keys = np.where(beyond, 0, keys)
    segments = Segments(counts)
    mass, w = segments.pad(mass), weights[segments.pad(keys, np.int64)]  # a 0 (on key 0) before each response
    scorable &= (counts > 0) & (segments.sums(mass) > 0.0)
    good = segments.sums(mass * np.clip(w, 0.0, None)).astype(np.float64)
    weighted = segments.sums(mass * np.abs(w)).astype(np.float64)
    return good, weighted, scorable


_JOB: tuple[SparseCache, np.ndarray, np.ndarray] | None = None  # what forked workers score


def _score_chunk(start: int, stop: int) -> np.ndarray:
    cache, weights, ptr = _JOB
    lo, hi = ptr[start], ptr[stop]
    return _gmf(np.asarray(cache.base_keys[lo:hi]), np.asarray(cache.base_w_sum[lo:hi]),
                np.diff(ptr[start:stop + 1]), weights)


def score_responses(cache: SparseCache, weights: np.ndarray, progress: bool = True,
                    workers: int | None = None) -> np.ndarray:
    """GMF of every response of ``cache`` (float32, NaN where unscorable), in cache order, read from the
    memory-mapped base view about ``CHUNK_ENTRIES`` entries at a time, by ``workers`` processes (default:
    every core)."""
    global _JOB
    weights, workers = check_weights(weights), check_workers(workers)
    ptr = np.asarray(cache.base_row_ptr)
    bounds, start = [0], 0
    while start < cache.n_responses:
        start = max(start + 1, int(np.searchsorted(ptr, ptr[start] + CHUNK_ENTRIES, side="right")) - 1)
        bounds.append(start)
    out = np.full(cache.n_responses, np.nan, np.float32)
    _JOB = (cache, weights, ptr)
    try:
        with in_chunks(_score_chunk, list(zip(bounds[:-1], bounds[1:])), workers) as results, \
                tqdm(total=cache.n_responses, desc="nex score", unit="resp", disable=not progress,
                     mininterval=0.5) as bar:
            for start, stop, gmf in zip(bounds[:-1], bounds[1:], results):
                out[start:stop] = gmf
                cache.advance("base", ptr[stop])  # the full check of what was just read, when left to this pass
                bar.update(stop - start)
    finally:
        _JOB = None
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
