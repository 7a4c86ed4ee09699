"""Deriving a coarser or sparser cache from a token-level one, without the model.

A capture with ``window 1`` keeps every generated token's sparse selection, in descending
score (``capture.rows.WindowAccumulator``). From it, the cache that a capture with any window W
and any *stricter* sparsifier would have written follows exactly: a smaller top-k takes
each token's first k entries, a smaller per-layer top-k the first k of each layer, a higher
threshold the entries above it; rows then sum W tokens' scores per neuron. Keys equal those
of a direct capture (for a threshold, up to scores within float16 rounding of it) and mass
agrees to float16 rounding, since the token scores were stored in float16. A looser
sparsifier (a larger k than was captured) cannot be derived and is refused. The
per-response table (``responses.parquet``, with its per-token columns) is carried along.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nex_causal.cache import CAPTURE_FILE, TOKEN_ORDER, SparseCache, SparseCacheWriter, seal
from nex_causal.capture.sparsify import LayerTopK, Sparsifier, Threshold
from nex_causal.errors import NexError
from nex_causal.io import atomic_path, versions, write_json
from nex_causal.resume import stamp


def select_tokens(keys: np.ndarray, mass: np.ndarray, ptr: np.ndarray, target: Sparsifier) -> np.ndarray:
    """Mask of the entries of token rows (entries in descending score) that ``target`` keeps."""
    row = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    rank = np.arange(len(keys)) - ptr[row]
    if isinstance(target, Threshold):
        return mass > target.value
    if isinstance(target, LayerTopK):
        group = row.astype(np.int64) * 256 + (keys >> 16)
        order = np.argsort(group, kind="stable")  # keeps each group's entries in score order
        sorted_group = group[order]
        starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        rank = np.empty(len(keys), np.int64)
        rank[order] = np.arange(len(order)) - first
    return rank < int(target.value)


def rewindow_response(keys: np.ndarray, mass: np.ndarray, ptr: np.ndarray, window: int,
                      target: Sparsifier) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The rows (keys, float32 mass, n_tokens) of one response at ``window`` tokens, from its token rows."""
    keep = select_tokens(keys, mass, ptr, target)
    token = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))[keep]
    keys, mass = keys[keep].astype(np.int64), mass[keep].astype(np.float64)
    n_tokens = len(ptr) - 1
    rows = []
    for w, start in enumerate(range(0, n_tokens, window)):
        inside = (token >= start) & (token < start + window)
        unique, inverse = np.unique(keys[inside], return_inverse=True)
        summed = np.bincount(inverse, weights=mass[inside], minlength=len(unique))
        rows.append((unique.astype(np.uint32), summed.astype(np.float32), min(window, n_tokens - start)))
    return rows


def rewindow(src: str | Path, out: str | Path, *, window: int, sparsifier: str | None = None,
             progress: bool = False) -> SparseCache:
    """Write the cache of ``window``-token rows and ``sparsifier`` (default: the captured one) derived
    from the token-level cache ``src`` into ``out``."""
    source = SparseCache.open(src)
    info = source.capture_info
    if info is None:
        raise NexError(f"{source.path} has no {CAPTURE_FILE}: re-windowing needs to know how the cache was "
                       "captured (its sparsifier); capture it with `nex-causal capture --window 1`")
    tokens = np.diff(np.asarray(source.token_row_ptr))
    if tokens.size and (tokens != 1).any():
        raise NexError(f"{source.path} has rows of {int(tokens.max())} tokens: re-windowing needs a token-level "
                       "cache (capture with --window 1)")
    if int(window) != window or window < 1:
        raise NexError(f"window must be a positive number of tokens, got {window}")
    if info.get("token_rows") != TOKEN_ORDER:
        raise NexError(f"{source.path} was captured before one-token rows kept their entries in score order: "
                       "capture it again with --window 1")
    captured = Sparsifier.parse(info["config"]["sparsifier"])
    target = Sparsifier.parse(sparsifier) if sparsifier else captured
    if not target.derives_from(captured):
        raise NexError(f"cannot derive {target} from a cache captured with {captured}: only a stricter selection "
                       f"follows from it; capture again with --sparsifier {target}")
    out = Path(out)
    if out.exists():
        raise NexError(f"{out} already exists: choose another --out or delete it")
    config = {**info["config"], "window": int(window), "sparsifier": str(target)}
    sample_ptr, row_ptr = np.asarray(source.sample_row_ptr), np.asarray(source.row_ptr)
    with atomic_path(out, is_dir=True) as tmp:
        with SparseCacheWriter(tmp) as writer:  # itself atomic, inside the directory published at the end
            for r in tqdm(range(source.n_responses), desc=f"rewindow {window}", disable=not progress):
                first, stop = sample_ptr[r], sample_ptr[r + 1]
                lo, hi = row_ptr[first], row_ptr[stop]
                writer.append(rewindow_response(np.asarray(source.keys[lo:hi]),
                                                np.asarray(source.w_sum[lo:hi], np.float32),
                                                row_ptr[first:stop + 1] - lo, int(window), target))
        if (source.path / "responses.parquet").is_file():
            shutil.copy2(source.path / "responses.parquet", tmp / "responses.parquet")
        write_json(tmp / CAPTURE_FILE, {
            **{k: v for k, v in info.items() if k not in ("config", "stack", "versions")}, **stamp(config),
            "versions": versions(), "derived_from": {"cache": str(source.path), "config": info["config"]}})
        seal(tmp)
    return SparseCache.open(out)

