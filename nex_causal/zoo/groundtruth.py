"""The scout organism's ground truth, set against what NEX reads: the positive control's measurements.

Every scout trace records its strategy spans (``scout.segments``, in responses.parquet's
``ground_truth``) and every family's computation was routed to its own block of MLP units
in training (``route``). So three things NEX claims to find can be checked:

- **phases**: a cache row is exploration when most of its tokens lie in a strategy span
  (explored before the hit, or a detour after it); the HMM's E/X labels are compared with
  that, as a person's labels would be (``nex.annotate.agreement``);
- **units**: the units of the real families (opened, and used later) against those of the
  decoys (opened and abandoned): NEX should weight the first effective and the second
  redundant, an AUROC of the weights;
- **exploration**: how many strategies a trace opens, the ground-truth measure of
  exploration the inverted U is drawn against.

Two negative controls take NEX's signal away by construction: rows shuffled within each
response (no order left to read), and E/X labels permuted with their run lengths kept (the
phases no longer where exploration is).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nex_causal.cache import KEY_SPACE, SparseCache, SparseCacheWriter
from nex_causal.errors import NexError
from nex_causal.nex.annotate import Agreement, agreement, hmm_labels, window_bounds
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import Credit, credit, cycles
from nex_causal.nex.novelty import clean_rows, novelty
from nex_causal.nex.phases import segment
from nex_causal.nex.runlength import runs
from nex_causal.zoo.route import Route
from nex_causal.zoo.scout import DECOYS, REAL

EXPLORING = ("explore", "detour")


def spans(cache: SparseCache) -> list[list[dict]]:
    """Each response's ground-truth segments (character = token offsets in the response)."""
    table = cache.responses
    if table is None or "ground_truth" not in table:
        raise NexError(f"{cache.path} records no ground truth: capture the scout organism with this nex-causal")
    return [json.loads(text) if isinstance(text, str) else [] for text in table["ground_truth"]]


def row_truth(cache: SparseCache, r: int, segments: Sequence[dict]) -> np.ndarray:
    """Whether each raw row of response ``r`` is exploration: most of its tokens inside a strategy span."""
    bounds = window_bounds(cache, r)
    inside = np.zeros(bounds[-1] + 1, bool)
    for seg in segments:
        if seg["role"] in EXPLORING:
            inside[seg["start"]:seg["end"]] = True
    return np.array([inside[a:b].mean() > 0.5 if b > a else False for a, b in itertools.pairwise(bounds)])


def phase_pairs(cache: SparseCache, config: NexConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(truth, HMM) E labels of the rows the method labels, per response."""
    out = []
    for r, segments in enumerate(spans(cache)):
        hmm = hmm_labels(cache, r, config)
        keep = hmm != ""
        out.append((row_truth(cache, r, segments)[keep], hmm[keep] == "E"))
    return out


def phase_agreement(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, n_boot: int, seed: int
                    ) -> tuple[Agreement, tuple[float, float]]:
    """Agreement of HMM phases with the truth over every row, and a bootstrap interval of kappa over responses."""
    truth = np.concatenate([t for t, _ in pairs])
    hmm = np.concatenate([h for _, h in pairs])
    overall = agreement(truth, hmm)
    rng = np.random.default_rng(seed)
    kappas = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(pairs), len(pairs))
        kappas.append(agreement(np.concatenate([pairs[i][0] for i in pick]),
                                np.concatenate([pairs[i][1] for i in pick])).kappa)
    low, high = np.nanpercentile(kappas, [2.5, 97.5])
    return overall, (float(low), float(high))


def present_keys(cache: SparseCache) -> np.ndarray:
    """The keys that carry mass somewhere in the cache (its neurons NEX could weigh)."""
    keys = np.asarray(cache.base_keys)
    return np.unique(keys[np.asarray(cache.base_w_sum, np.float32) > 0])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def unit_auroc(weights: np.ndarray, route: Route, n_layers: int, present: np.ndarray, *, n_boot: int, seed: int,
               minus: np.ndarray | None = None) -> tuple[float, float, float, int, int]:
    """AUROC of the weights: the real families' planted units (positive) against the decoys' (negative), among
    the units the cache holds, with a bootstrap interval over units; and how many of each there were. With
    ``minus`` (other weights of the same units, a negative control's), the AUROC's drop from ``weights`` to
    ``minus``, bootstrapped on the same unit draws."""
    real = np.concatenate([route.units(f, n_layers) for f in REAL])
    decoy = np.concatenate([route.units(f, n_layers) for f in DECOYS])
    real, decoy = np.intersect1d(real, present), np.intersect1d(decoy, present)
    keys = np.concatenate([real, decoy]).astype(np.int64)
    labels = np.r_[np.ones(len(real), bool), np.zeros(len(decoy), bool)]

    def value(pick: np.ndarray) -> float:
        got = auroc(np.asarray(weights)[keys[pick]], labels[pick])
        return got if minus is None else got - auroc(np.asarray(minus)[keys[pick]], labels[pick])

    estimate = value(np.arange(len(keys)))
    if not len(real) or not len(decoy):
        return estimate, float("nan"), float("nan"), len(real), len(decoy)
    rng = np.random.default_rng(seed)
    draws = [value(np.r_[rng.choice(len(real), len(real)), len(real) + rng.choice(len(decoy), len(decoy))])
             for _ in range(n_boot)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return estimate, float(low), float(high), len(real), len(decoy)


def strategies_opened(cache: SparseCache) -> np.ndarray:
    """How many strategies each response opens (its exploration, by the ground truth)."""
    return np.array([sum(s["role"] in EXPLORING for s in segments) for segments in spans(cache)], np.float64)


# --- negative controls -----------------------------------------------------------------------------

def shuffled_cache(source: SparseCache, out: str | Path, seed: int) -> SparseCache:
    """``source`` with the rows of every response in a seeded random order (the same entries, no order left)."""
    rng = np.random.default_rng(seed)
    with SparseCacheWriter(out) as writer:
        for r in range(source.n_responses):
            rows = list(source.response_rows(r))
            writer.append([rows[i] for i in rng.permutation(len(rows))],
                          meta=None if source.responses is None else source.responses.iloc[r].to_dict())
    return SparseCache.open(out)


def permuted_runs(explore: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``explore`` with its maximal runs in a random order: each run keeps its label and length (neighbours of
    one label may join), so as many rows explore, in runs as long, but not where the method put them."""
    found = runs(explore)
    order = rng.permutation(len(found))
    return np.concatenate([np.full(found[i][2] - found[i][1] + 1, found[i][0]) for i in order]) if found \
        else np.asarray(explore, bool)


def permuted_phase_credit(cache: SparseCache, config: NexConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eff and Red learned with every response's E/X labels permuted run by run (run lengths kept)."""
    rng = np.random.default_rng(seed)
    eff, red = np.zeros(KEY_SPACE, np.float32), np.zeros(KEY_SPACE, np.float32)
    for r in range(cache.n_responses):
        nov = novelty(clean_rows(cache.response_rows(r), positive_only=config.positive_only))
        if nov.rows.n_rows < 3:
            continue
        explore = permuted_runs(segment(nov.slopes, config.rho, config.min_run).explore, rng)
        got: Credit = credit(nov, cycles(nov, explore), config.skip_opening)
        got.add_to(eff, red)
    return eff, red
