"""Selectors that read neurons: NEX and neuron agreement (NAD, arXiv 2510.26277).

- ``nex-self``, ``nex-pooled``, ``nex-cross``, ``nex-split``: the highest Good-Mass Fraction
  under each calibration protocol (``nex.calibration``: weights learned on the same unlabeled
  cache, on every cache of the table pooled, on the other caches (or weights given), on the
  other half of the prompts).
- NAD, with S_r a response's activated key set: MinAct (smallest |S_r|), Jaccard medoid,
  kNN-medoid, DBSCAN-medoid, and consensus-min (the smallest |S_r| among the picks of those
  three medoids, as NAD's release defines it); each again on the rows within the first
  ``early_tokens`` generated tokens (the early decision, ``@early``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse

from nex_causal.nex.calibration import CALIBRATIONS
from nex_causal.selectors.base import (
    SELECTORS,
    Context,
    Outcome,
    SelectionConfig,
    by_score,
    picks,
)
from nex_causal.selectors.pool import Pool


def _nex(mode: str) -> Callable[[Pool, Context], np.ndarray]:
    """The GMF of each response under calibration ``mode`` (``nex.calibration``), the run's NEX settings."""
    def scores(pool: Pool, context: Context) -> np.ndarray:
        pool.require_cache()
        return context.calibrations.gmf(context.name, mode)
    return scores


for _mode in CALIBRATIONS:
    by_score(f"nex-{_mode}", _nex(_mode))


# --- neuron-agreement (NAD) choices on key sets ------------------------------------------

def jaccard_distances(key_sets: Sequence[np.ndarray]) -> np.ndarray:
    """``D[r, s] = 1 - |S_r & S_s| / |S_r | S_s|`` for sets of unique keys (0 between two empty sets).

    All intersections come from one sparse product of the key-by-response membership matrix.
    """
    sizes = np.array([len(s) for s in key_sets], np.int64)
    keys = np.concatenate(key_sets).astype(np.int64) if len(key_sets) else np.empty(0, np.int64)
    member = sparse.csc_matrix((np.ones(len(keys)), keys, np.concatenate([[0], np.cumsum(sizes)])),
                               shape=(int(keys.max(initial=-1)) + 1, len(key_sets)))
    inter = (member.T @ member).toarray()
    union = sizes[:, None] + sizes[None, :] - inter
    return np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 0.0)


def medoid(distances: np.ndarray) -> int:
    """The response with the least mean distance to the others."""
    return int(np.argmin(distances.mean(axis=1)))


def knn_medoid(distances: np.ndarray, k: int = 3) -> int:
    """The response whose ``k`` most similar other responses are, on average, most similar."""
    n = len(distances)
    if n == 1:
        return 0
    similarity = 1.0 - distances
    np.fill_diagonal(similarity, -np.inf)  # a response is not its own neighbour
    top = -np.sort(-similarity, axis=1)[:, :min(k, n - 1)]
    return int(np.argmax(top.mean(axis=1)))


def dbscan_medoid(distances: np.ndarray, *, quantile: float = 0.3, min_samples: int = 3) -> int:
    """Medoid of the largest DBSCAN cluster; the plain medoid when no cluster forms.

    ``eps`` is the ``quantile`` of the off-diagonal distances (floored just above 0 so that
    identical responses still count as neighbours). Equal-sized clusters: the one DBSCAN
    found first (it holds the lowest index).
    """
    from sklearn.cluster import DBSCAN

    n = len(distances)
    if n < min_samples:
        return medoid(distances)
    eps = max(float(np.quantile(distances[np.triu_indices(n, 1)], quantile)), 1e-12)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(distances).labels_
    if (labels < 0).all():
        return medoid(distances)
    members = np.flatnonzero(labels == np.argmax(np.bincount(labels[labels >= 0])))
    return int(members[medoid(distances[np.ix_(members, members)])])


def min_act(sizes: np.ndarray) -> int:
    """The response that activated the fewest neurons (NAD MinAct)."""
    return int(np.argmin(sizes))


def consensus_min(distances: np.ndarray, sizes: np.ndarray, k: int = 3) -> int:
    """Of the medoid, kNN-medoid and DBSCAN-medoid, the one with the fewest activated neurons."""
    candidates = sorted({medoid(distances), knn_medoid(distances, k), dbscan_medoid(distances)})
    return candidates[min_act(np.asarray(sizes)[candidates])]


def _group_distances(pool: Pool, early: int | None) -> list[np.ndarray]:
    sets = pool.key_sets if early is None else pool.early(early)[0]
    return pool.memo(("jaccard", early), lambda: [jaccard_distances([sets[r] for r in g]) for g in pool.groups])


def _nad(choose: Callable[[np.ndarray, np.ndarray, SelectionConfig], int], early: bool) -> Callable:
    """The NAD selector ``choose(distances, sizes, config)``, on whole responses or on their early rows."""
    def selector(pool: Pool, context: Context) -> Outcome:
        tokens = context.config.early_tokens if early else None
        sets, read = pool.early(tokens) if early else (pool.key_sets, None)
        distances = _group_distances(pool, tokens)
        sizes = np.array([len(s) for s in sets])
        return picks(pool, lambda i, g: choose(distances[i], sizes[g], context.config), read)
    return selector


NAD_CHOICES = {
    "minact": lambda d, sizes, config: min_act(sizes),
    "medoid": lambda d, sizes, config: medoid(d),
    "knn-medoid": lambda d, sizes, config: knn_medoid(d, config.knn_k),
    "dbscan-medoid": lambda d, sizes, config: dbscan_medoid(d),
    "consensus-min": lambda d, sizes, config: consensus_min(d, sizes, config.knn_k),
}
for _early in (False, True):
    for _name, _choose in NAD_CHOICES.items():
        SELECTORS.add(f"nad-{_name}{'@early' if _early else ''}", _nad(_choose, _early))
