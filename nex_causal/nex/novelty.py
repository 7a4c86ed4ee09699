"""Cleaning rows and the novelty slope (NEX_METHOD sections 1-2).

A row is cleaned before use: layer-255 keys are dropped, non-finite mass counts as 0 and
negative mass is clipped to 0. Entries left with zero mass carry nothing into any later
step, so cleaning drops them outright. A row with no entries left, or with no tokens, is
skipped. Neuron n is introduced in the first usable row where it has positive mass; the
novelty slope of row j is s_j = |I_j| / T_j, newly recruited neurons per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nex_causal.cache import KEY_SPACE, RESERVED_LAYER, ResponseRows
from nex_causal.errors import NexError


def usable_entries(keys: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Mask of the entries that survive cleaning: not layer 255, finite positive mass."""
    keys, mass = np.asarray(keys), np.asarray(mass)
    return ((keys >> 16) != RESERVED_LAYER) & np.isfinite(mass) & (mass > 0)


def clean_row(keys: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cleaned entries (uint32 keys, float64 mass) of a row, or of any set of entries."""
    keep = usable_entries(keys, mass)
    return np.asarray(keys)[keep].astype(np.uint32), np.asarray(mass, np.float64)[keep]


@dataclass(frozen=True)
class Rows:
    """The usable rows of one response, cleaned, as CSR arrays.

    Row j holds ``keys[row_ptr[j]:row_ptr[j + 1]]`` with their mass over ``tokens[j]``
    tokens; ``source[j]`` is its index among the response's raw rows.
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

    def span(self, first: int, last: int) -> slice:
        """The entries of rows ``first..last`` (inclusive)."""
        return slice(self.row_ptr[first], self.row_ptr[last + 1])


def clean_rows(rows: ResponseRows) -> Rows:
    """Clean every row of a response and skip the rows left empty or without tokens."""
    tokens = np.asarray(rows.tokens, np.int64)
    if not len(rows.keys) == len(rows.mass) == len(tokens):
        raise NexError(f"a response needs one key array, mass array and token count per row; got "
                       f"{len(rows.keys)}, {len(rows.mass)} and {len(tokens)}")
    sizes = [np.size(k) for k in rows.keys]
    if sizes != [np.size(m) for m in rows.mass]:
        raise NexError("every row needs as many mass values as keys")
    keys = np.concatenate([np.ravel(k) for k in rows.keys]).astype(np.int64) if sizes else np.empty(0, np.int64)
    mass = np.concatenate([np.ravel(m) for m in rows.mass]).astype(np.float64) if sizes else np.empty(0)
    row = np.repeat(np.arange(len(tokens)), sizes)
    keep = usable_entries(keys, mass)
    counts = np.bincount(row[keep], minlength=len(tokens))
    usable = (counts > 0) & (tokens > 0)
    keep &= usable[row]
    keys = keys[keep]
    if keys.size and (keys.min() < 0 or keys.max() >= KEY_SPACE):
        raise NexError(f"key {keys.max() if keys.max() >= KEY_SPACE else keys.min()} is outside the 2**22 "
                       "key space; keys are packed (layer << 16) | unit with layer < 64 (255 is ignored)")
    return Rows(keys.astype(np.uint32), mass[keep], np.concatenate([[0], np.cumsum(counts[usable])]),
                tokens[usable], np.flatnonzero(usable))


@dataclass(frozen=True)
class Novelty:
    """Newly recruited neurons of each row of ``rows``.

    ``first_row[e]``: the row where entry e's neuron is introduced (its first row with
    positive mass); ``slopes[j]`` = s_j = |I_j| / T_j.
    """

    rows: Rows
    first_row: np.ndarray
    slopes: np.ndarray

    @cached_property
    def introduced(self) -> np.ndarray:
        """Mask of the entries whose neuron is introduced in their own row (the sets I_j)."""
        return self.first_row == self.rows.row_of_entry

    def introduced_set(self, j: int) -> np.ndarray:
        """I_j: the sorted keys introduced in row j."""
        span = self.rows.span(j, j)
        return np.unique(self.rows.keys[span][self.introduced[span]])


def novelty(rows: Rows) -> Novelty:
    """First-introduction rows of every entry and the novelty slopes of ``rows``."""
    # entries are in row order, so a neuron's first entry lies in the row that introduces it
    _, first_entry, neuron = np.unique(rows.keys, return_index=True, return_inverse=True)
    first = rows.row_of_entry[first_entry]
    slopes = np.bincount(first, minlength=rows.n_rows) / rows.tokens
    return Novelty(rows, first[neuron], slopes)
