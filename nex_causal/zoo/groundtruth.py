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

Per response, the same question is asked of each strategy a response opened (``block_table``):
NEX's credit to the family's units in that response, when the family was used, rejected
before the hit (as early as the used one: the harder negative) or opened as a detour after
it. The negative controls that take NEX's order away are ``nex.controls``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.annotate import Agreement, agreement, confusion, from_confusion, hmm_labels, window_bounds
from nex_causal.nex.config import NexConfig
from nex_causal.nex.novelty import clean_rows, novelty
from nex_causal.zoo.route import Route
from nex_causal.zoo.scout import DECOYS, REAL

if TYPE_CHECKING:
    import pandas as pd

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
    """Agreement of HMM phases with the truth over every row, and a bootstrap interval of kappa over responses
    (each draw sums the drawn responses' confusion counts: the rows of the drawn responses, pooled)."""
    counts = np.array([confusion(t, h) for t, h in pairs], np.int64).reshape(-1, 4)
    overall = agreement(np.concatenate([t for t, _ in pairs]), np.concatenate([h for _, h in pairs]))
    rng = np.random.default_rng(seed)
    kappas = [from_confusion(counts[rng.integers(0, len(pairs), len(pairs))].sum(0)).kappa for _ in range(n_boot)]
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


# --- ground truth per response ------------------------------------------------------------------

CATEGORIES = ("used", "rejected", "detour")  # what a response did with a strategy it opened


def category(segment: dict) -> str | None:
    """``used``: opened before the hit and exploited; ``rejected``: a real family opened before the hit and
    abandoned (the harder negative: as early as the used one); ``detour``: opened after the hit."""
    if segment["role"] == "detour":
        return "detour"
    if segment["role"] == "explore":
        return "used" if segment["used"] else ("rejected" if segment["family"] in REAL else None)
    return None


def block_table(cache: SparseCache, config: NexConfig, route: Route, n_layers: int) -> pd.DataFrame:
    """One row per (response, family it opened): the category (``CATEGORIES``), NEX's net credit to the family's
    planted units in that response alone (the Eff it adds minus the Red), and, on the same units of the same
    response, the label-free stories: how early they first appear (``first_seen``, 1 at the first usable row),
    their share of the response's mass and of its rows."""
    import pandas as pd

    from nex_causal.nex.credit import analyze_response

    blocks = {f: route.units(f, n_layers).astype(np.int64) for f in (*REAL, *DECOYS)}
    seen_keys = None
    out = []
    for r, segments in enumerate(spans(cache)):
        opened: dict[str, str] = {}
        for seg in segments:  # a family opened twice keeps its strongest role: used, then rejected, then detour
            found = category(seg) if seg["role"] in EXPLORING else None
            if found and (seg["family"] not in opened or CATEGORIES.index(found) < CATEGORIES.index(
                    opened[seg["family"]])):
                opened[seg["family"]] = found
        if not opened:
            continue
        raw = cache.response_rows(r)
        if config.prompt_seen:
            from nex_causal.nex.learn import prompt_keys

            seen_keys = prompt_keys(cache, r)
        trace = analyze_response(raw, config, seen_keys)
        net = np.where(trace.credit.effective, trace.credit.amount, -trace.credit.amount).astype(np.float64)
        rows = clean_rows(raw, positive_only=config.positive_only)
        nov = novelty(rows)
        total = float(rows.mass.sum()) or 1.0
        for family, kind in opened.items():
            mine = np.isin(rows.keys, blocks[family])
            place = nov.first_row[mine].min() / max(rows.n_rows - 1, 1) if mine.any() else np.nan
            out.append({"response": r, "family": family, "category": kind,
                        "credit": float(net[np.isin(trace.credit.keys, blocks[family])].sum()),
                        "first_seen": 1.0 - place if mine.any() else 0.0,
                        "mass": float(rows.mass[mine].sum()) / total,
                        "rows": float(len(np.unique(rows.row_of_entry[mine]))) / max(rows.n_rows, 1)})
    return pd.DataFrame(out, columns=["response", "family", "category", "credit", "first_seen", "mass", "rows"])


def category_auroc(table: pd.DataFrame, score: str, negative: str, *, n_boot: int, seed: int
                   ) -> tuple[float, float, float, int, int]:
    """AUROC of ``score`` for the ``used`` blocks against the ``negative`` category's, with a bootstrap interval over
    responses (a response's blocks stay together), and how many of each there were."""
    part = table[table["category"].isin(["used", negative])]
    labels = (part["category"] == "used").to_numpy()
    values = part[score].to_numpy(np.float64)
    estimate = auroc(values, labels)
    groups = part.groupby("response").indices
    members = list(groups.values())
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot if np.isfinite(estimate) else 0):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        draws.append(auroc(values[pick], labels[pick]))
    low, high = np.nanpercentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
    return estimate, float(min(low, estimate)), float(max(high, estimate)), int(labels.sum()), int((~labels).sum())
