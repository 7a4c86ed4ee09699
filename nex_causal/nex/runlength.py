"""Run-length encoding of a label sequence: the maximal runs of equal labels.

One helper for every place that walks runs: explore/exploit phases and their cycles,
shaded spans in figures, profiles of caches.
"""

from __future__ import annotations

import numpy as np


def runs(labels: np.ndarray) -> list[tuple[bool, int, int]]:
    """``(label, first, last)`` (inclusive indices) of each maximal run of equal labels, in order."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    bounds = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts, lasts = np.concatenate([[0], bounds]), np.concatenate([bounds, [labels.size]]) - 1
    return list(zip(labels[starts].tolist(), starts.tolist(), lasts.tolist()))
