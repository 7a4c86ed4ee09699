"""Label-free unit statistics of a cache: how often, how much and how early each unit appears.

These are the simplest stories a NEX weight must beat. A unit NEX credits as effective may be
credited only because it is frequent, heavily used, or appears early in a response (on the
scout organism the real strategies are opened before the hit, the decoys after it). The
statistics read the same usable rows NEX reads (``novelty.clean_rows``), and no phase, cycle or
reuse share:

    rows        share of usable rows that hold the unit
    responses   share of responses (with a usable row) that hold it anywhere
    mass        its share of the cache's total row mass
    first_seen  how early it first appears: 1 minus the mean, over the responses that hold it, of
                its first row's place in the response (0 at the first usable row, 1 at the last)

Each is a float64 vector over the key space, 0 for a unit the cache never holds; pooled over
several caches the counts add before the shares are taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from nex_causal.cache import KEY_SPACE, SparseCache
from nex_causal.nex.novelty import clean_rows, novelty

STATISTICS = ("rows", "responses", "mass", "first_seen")


@dataclass
class UnitCounts:
    """The sums behind the statistics, over the key space (they add across caches)."""

    rows: np.ndarray
    responses: np.ndarray
    mass: np.ndarray
    first_place: np.ndarray  # sum over responses holding the unit of its first row's place in [0, 1]
    n_rows: int = 0
    n_responses: int = 0

    @classmethod
    def empty(cls) -> UnitCounts:
        return cls(*(np.zeros(KEY_SPACE, np.float64) for _ in range(4)))

    def add(self, cache: SparseCache) -> UnitCounts:
        """Add every usable row of ``cache``."""
        for r in range(cache.n_responses):
            rows = clean_rows(cache.response_rows(r))
            if rows.n_rows == 0:
                continue
            self.n_rows += rows.n_rows
            self.n_responses += 1
            present = np.unique(rows.keys * rows.n_rows + rows.row_of_entry)  # each (key, row) once
            np.add.at(self.rows, present // rows.n_rows, 1.0)
            np.add.at(self.mass, rows.keys, rows.mass.astype(np.float64))
            first = novelty(rows)
            keys = rows.keys[first.introduced]
            keys, at = np.unique(keys, return_index=True)
            place = first.first_row[first.introduced][at] / max(rows.n_rows - 1, 1)
            self.responses[keys] += 1.0
            self.first_place[keys] += place
        return self

    def statistic(self, name: str) -> np.ndarray:
        """One of ``STATISTICS`` over the key space."""
        held = self.responses > 0
        if name == "rows":
            return self.rows / max(self.n_rows, 1)
        if name == "responses":
            return self.responses / max(self.n_responses, 1)
        if name == "mass":
            total = self.mass.sum()
            return self.mass / total if total > 0 else self.mass
        if name == "first_seen":
            out = np.zeros(KEY_SPACE, np.float64)
            out[held] = 1.0 - self.first_place[held] / self.responses[held]
            return out
        raise KeyError(name)


def unit_counts(caches: Iterable[SparseCache]) -> UnitCounts:
    """The pooled sums of ``caches`` (read once; ask it for each statistic)."""
    counts = UnitCounts.empty()
    for cache in caches:
        counts.add(cache)
    return counts
