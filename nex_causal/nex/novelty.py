"""Cleaning rows and the novelty slope (NEX_METHOD sections 1-2), as the reference computes them.

A raw row is *usable* when it has entries and tokens, keeps an entry after its layer-255
keys are dropped, holds no key beyond the 2**22 key space (such a row is dropped whole),
and has positive total mass once non-finite mass is set to 0 and negative mass clipped to 0.
Every entry of a usable row is kept, zero-mass ones included, in its original order, with
float32 mass.

Neuron n is introduced in the first usable row where it is retained (whatever its mass),
and the novelty slope of row j is s_j = |I_j| / T_j in float32, where |I_j| counts a key
repeated inside a row once per occurrence. ``positive_only`` is the named alternative that
drops zero-mass entries first (the spec's "first row with positive mass"), so only neurons
that carried mass are introduced.

Time, for a response of ~100 rows and 30,000 entries: its rows are cleaned in a few passes
over the entries (~0.1 ms), with no loop over rows; novelty (~0.25 ms) is one scatter and
one gather of the entries over a 16 MiB scratch indexed by key, whose random accesses are
most of its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nex_causal.cache import KEY_SPACE, RESERVED_LAYER, ResponseRows
from nex_causal.errors import NexError


POSITIVE_INF_BITS = 0x7F800000  # float32 bit patterns below it are the finite numbers >= +0


def clean_mass(mass: np.ndarray) -> np.ndarray:
    """float32 mass with non-finite values set to 0 and negative values clipped to 0 (the array itself when
    every value is already finite and non-negative, as in any cache a capture wrote: one pass over its bits)."""
    mass = np.asarray(mass, np.float32)
    if not mass.size or int(mass.view(np.uint32).max()) < POSITIVE_INF_BITS:
        return mass
    return np.clip(np.where(np.isfinite(mass), mass, 0.0), 0.0, None)


def activated_keys(keys: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """The sorted distinct keys that carry positive finite mass, layer 255 left out (NAD's S_r)."""
    keys, mass = np.asarray(keys), np.asarray(mass)
    keep = ((keys >> 16) != RESERVED_LAYER) & np.isfinite(mass) & (mass > 0)
    return np.unique(keys[keep]).astype(np.uint32)


class Segments:
    """Consecutive segments of ``counts[s]`` values, each summed as ``np.sum`` sums it, in one call.

    ``np.add.reduceat`` adds a segment's first value to the pairwise sum of the rest, which
    rounds differently from ``np.sum`` (the pairwise sum of the whole segment, as the
    reference adds a row); a 0 put before every segment (``pad``) makes the two equal to the
    bit (``sums``). Several arrays laid out alike share one layout.
    """

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, np.int64)
        self.starts = np.zeros(len(counts), np.int64)
        np.cumsum(counts[:-1] + 1, out=self.starts[1:])
        self.slots = np.ones(int(counts.sum()) + len(counts), bool)
        self.slots[self.starts] = False

    def pad(self, values: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """``values`` with a 0 before every segment (in ``dtype``, default theirs)."""
        padded = np.zeros(len(self.slots), dtype or values.dtype)
        padded[self.slots] = values
        return padded

    def sums(self, padded: np.ndarray) -> np.ndarray:
        """The sum of each segment of a ``pad``-ded array (0 when empty)."""
        return np.add.reduceat(padded, self.starts) if len(self.starts) else np.zeros(0, padded.dtype)


def segment_sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.sum`` of each consecutive segment of ``values`` (``counts[s]`` values; 0 when empty), in one call."""
    segments = Segments(counts)
    return segments.sums(segments.pad(values))


def per_row(mask: np.ndarray, row_ptr: np.ndarray) -> np.ndarray:
    """How many entries of each row ``mask`` selects (rows as in ``row_ptr``): one ``reduceat`` (a tenth of the time
    of a running count) over the rows that start inside ``mask``, its value for an empty row (the next row's first
    entry) set to 0; rows after the last entry are empty."""
    starts = np.asarray(row_ptr[:-1])
    counts = np.zeros(len(starts), np.int64)
    inside = int(np.searchsorted(starts, len(mask)))  # starts never decrease
    if inside:
        counts[:inside] = np.add.reduceat(mask, starts[:inside], dtype=np.int64)
        counts[starts == row_ptr[1:]] = 0
    return counts


@dataclass(frozen=True)
class Rows:
    """The usable rows of one response, cleaned, as CSR arrays.

    Row j holds ``keys[row_ptr[j]:row_ptr[j + 1]]`` (int64) with their float32 ``mass``
    over ``tokens[j]`` tokens; ``source[j]`` is its index among the response's raw rows.
    """

    keys: np.ndarray
    mass: np.ndarray
    row_ptr: np.ndarray
    tokens: np.ndarray
    source: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.tokens)

    @cached_property
    def row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_rows), np.diff(self.row_ptr))

    @cached_property
    def totals(self) -> np.ndarray:
        """Each row's float32 mass sum as the reference takes it (``np.sum`` of the row), in float64."""
        return segment_sums(self.mass, np.diff(self.row_ptr)).astype(np.float64)

    def span(self, first: int, last: int) -> slice:
        """The entries of rows ``first..last`` (inclusive)."""
        return slice(int(self.row_ptr[first]), int(self.row_ptr[last + 1]))


def clean_rows(rows: ResponseRows, *, positive_only: bool = False) -> Rows:
    """The usable rows of a response (see the module docstring), in order."""
    tokens = np.asarray(rows.tokens, np.int64)
    sizes = np.diff(rows.row_ptr)
    if len(sizes) != len(tokens) or rows.row_ptr[-1] != len(rows.keys) or len(rows.keys) != len(rows.mass):
        raise NexError(f"a response needs a pointer per row ({len(sizes)}) and a token count per row "
                       f"({len(tokens)}), over keys and mass of one length ({len(rows.keys)}, {len(rows.mass)})")
    keys, mass = np.asarray(rows.keys), clean_mass(rows.mass)
    if positive_only or (keys.size and ((keys.dtype.kind == "i" and keys.min() < 0) or keys.max() >= KEY_SPACE)):
        return _clean_entries(keys.astype(np.int64), mass, sizes, tokens, positive_only)
    # every key is a neuron of the key space: a row is usable when it has entries, tokens and mass
    ptr = np.asarray(rows.row_ptr, np.int64)
    usable = (sizes > 0) & (tokens > 0) & (per_row(mass > 0, ptr) > 0)
    keys = keys.astype(np.int64)
    if usable.all():
        return Rows(keys, mass, ptr, tokens, np.arange(len(tokens)))
    kept = np.repeat(usable, sizes)
    return Rows(keys[kept], mass[kept], np.concatenate([[0], np.cumsum(sizes[usable])]), tokens[usable],
                np.flatnonzero(usable))


def _clean_entries(keys: np.ndarray, mass: np.ndarray, sizes: np.ndarray, tokens: np.ndarray,
                   positive_only: bool) -> Rows:
    """``clean_rows`` entry by entry: for layer-255 keys, keys beyond the key space, or ``positive_only``."""
    n = len(tokens)
    row = np.repeat(np.arange(n), sizes)
    kept = (keys >> 16) != RESERVED_LAYER
    beyond = np.bincount(row[kept & ((keys < 0) | (keys >= KEY_SPACE))], minlength=n) > 0
    if positive_only:
        kept &= mass > 0
    usable = ((sizes > 0) & (tokens > 0) & (np.bincount(row[kept], minlength=n) > 0) & ~beyond
              & (np.bincount(row[kept & (mass > 0)], minlength=n) > 0))
    kept &= usable[row]
    counts = np.bincount(row[kept], minlength=n)[usable]
    return Rows(keys[kept], mass[kept], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                tokens[usable], np.flatnonzero(usable))


@dataclass(frozen=True)
class Novelty:
    """Newly recruited neurons of each row of ``rows``.

    ``first_row[e]``: the row where entry e's neuron is introduced (its first usable row);
    ``introduced``: the entries whose neuron is introduced in their own row (the sets I_j);
    ``n_new[j]`` = |I_j| (a key repeated in its row counted per copy), ``slopes[j]`` =
    s_j = |I_j| / T_j; ``n_neurons``: the distinct neurons of the rows.
    """

    rows: Rows
    first_row: np.ndarray
    slopes: np.ndarray
    introduced: np.ndarray
    n_new: np.ndarray
    n_neurons: int

    def introduced_set(self, j: int) -> np.ndarray:
        """I_j: the sorted distinct keys introduced in row j."""
        span = self.rows.span(j, j)
        return np.unique(self.rows.keys[span][self.introduced[span]])


_SCRATCH: np.ndarray | None = None  # per-process scratch over the key space (16 MiB), written before read


def key_scratch() -> np.ndarray:
    """An int32 array over the key space, for one-pass lookups by key (contents undefined)."""
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = np.empty(KEY_SPACE, np.int32)
    return _SCRATCH


def novelty(rows: Rows, seen: np.ndarray | None = None) -> Novelty:
    """First-introduction rows of every entry and the novelty slopes of ``rows``: one scatter and one
    gather over the key space, whatever the number of rows.

    ``seen`` (the named departure ``NexConfig.prompt_seen``): keys already active before the
    response, on its prompt; they are never introduced (their ``first_row`` is -1).
    """
    row, entry = rows.row_of_entry, np.arange(len(rows.keys), dtype=np.int32)
    scratch = key_scratch()
    scratch[rows.keys[::-1].copy()] = entry[::-1].copy()  # back to front: each key holds its first entry (copies
    # first: a scatter through reversed views takes half as long again)
    first = scratch[rows.keys]
    first_row = row[first]
    if seen is not None and len(seen):
        known = np.isin(rows.keys, np.asarray(seen, np.int64))
        first_row = np.where(known, -1, first_row)
        first = np.where(known, -1, first)
    introduced = first_row == row
    n_new = per_row(introduced, rows.row_ptr)
    return Novelty(rows, first_row, (n_new / rows.tokens).astype(np.float32), introduced, n_new,
                   int(np.count_nonzero(first == entry)))
