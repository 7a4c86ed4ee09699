"""Human annotation of explore (E) and exploit (X) phases, scored against the HMM segmentation.

An annotator reads the windows of a few responses (``capture.annotation`` exports them as a
CSV and a self-contained page) and marks each one E (the window brings in something new: an
approach, a sub-goal, a guess, a correction) or X (it carries out, restates or checks what
came before). The windows are exactly the cache's rows, so each human label lines up with
one label of NEX_METHOD section 3.

Score reads the labels back (E or X, any case; blank means not annotated) and compares
them with the HMM phases that ``nex.analyze_response`` computes on the same cache with the
same ``NexConfig``: Cohen's kappa, the F1 of each phase and the raw agreement. Rows the
method skips (no usable mass) have no HMM label and are counted, not compared. The same
scorer reads labels that come from elsewhere than a person, such as an organism's ground
truth.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nex_causal.cache import SparseCache
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.credit import analyze_response

COLUMNS = ("response", "prompt_id", "sample_index", "row", "token_start", "token_end", "text", "label")
PHASES = {"E": True, "X": False}


def window_bounds(cache: SparseCache, r: int) -> np.ndarray:
    """Token offsets of response ``r``'s rows within the response: row j is [b[j], b[j+1])."""
    first, stop = cache.sample_row_ptr[r], cache.sample_row_ptr[r + 1]
    ptr = np.asarray(cache.token_row_ptr[first:stop + 1], np.int64)
    return ptr - ptr[0]


# --- reading labels back and scoring them -------------------------------------------------

def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """The labelled windows of an annotation CSV: ``response``, ``row``, ``token_start``,
    ``token_end`` and ``label`` ("E" or "X"; blank rows, not annotated, are dropped)."""
    path = Path(path)
    if not path.is_file():
        raise NexError(f"labels file {path} does not exist: pass the CSV the annotator filled in")
    table = pd.read_csv(path, dtype={"label": str, "text": str, "prompt_id": str}, keep_default_na=False)
    needed = ["response", "row", "token_start", "token_end", "label"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise NexError(f"{path} lacks column(s) {', '.join(missing)}: pass a CSV made by `annotate export`")
    for column in needed[:-1]:
        if not pd.api.types.is_integer_dtype(table[column]):
            raise NexError(f"{path} has a non-integer {column}: keep the exported columns as they are, "
                           "fill in only label")
    table["label"] = table["label"].str.strip().str.upper()
    bad = table.index[~table["label"].isin(["", *PHASES])]
    if len(bad):
        raise NexError(f"{path} line {bad[0] + 2} has label {table.loc[bad[0], 'label']!r}: "
                       "use E (explore), X (exploit) or leave it blank")
    if table.duplicated(["response", "row"]).any():
        first = table[table.duplicated(["response", "row"])].iloc[0]
        raise NexError(f"{path} labels response {first['response']} row {first['row']} twice: keep one line")
    return table.loc[table["label"] != "", needed].reset_index(drop=True)


@dataclass(frozen=True)
class Agreement:
    """Agreement of human labels with the HMM phases over ``n`` windows (E is the positive class).

    ``kappa`` is NaN when undefined (both sides give one and the same label everywhere);
    an F1 is NaN when neither side uses that phase.
    """

    n: int
    kappa: float
    f1_explore: float
    f1_exploit: float
    accuracy: float


def confusion(human: np.ndarray, hmm: np.ndarray) -> np.ndarray:
    """Counts of (both E, HMM E only, human E only, both X) over two boolean label arrays (True = E)."""
    human, hmm = np.asarray(human, bool), np.asarray(hmm, bool)
    both = np.count_nonzero(human & hmm)
    n_hmm, n_human = np.count_nonzero(hmm), np.count_nonzero(human)
    return np.array([both, n_hmm - both, n_human - both, len(human) - n_hmm - n_human + both], np.int64)


def from_confusion(counts: np.ndarray) -> Agreement:
    """Cohen's kappa, per-phase F1 and raw agreement from ``confusion`` counts (sklearn's definitions: kappa NaN
    when chance agreement is 1, an F1 NaN when neither side uses that phase)."""
    a, b, c, d = (float(x) for x in counts)
    n = a + b + c + d
    observed = (a + d) / n
    chance = ((a + b) * (a + c) + (c + d) * (b + d)) / n ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.float64(observed - chance) / np.float64(1 - chance)
        f1_e, f1_x = np.float64(2 * a) / (2 * a + b + c), np.float64(2 * d) / (2 * d + b + c)
    return Agreement(int(n), float(kappa), float(f1_e), float(f1_x), observed)


def agreement(human: np.ndarray, hmm: np.ndarray) -> Agreement:
    """Cohen's kappa, per-phase F1 and raw agreement of two boolean label arrays (True = E)."""
    human, hmm = np.asarray(human, bool), np.asarray(hmm, bool)
    if human.shape != hmm.shape or not len(human):
        raise NexError(f"agreement needs two equally long, non-empty label lists (got {len(human)} and {len(hmm)})")
    return from_confusion(confusion(human, hmm))


def hmm_labels(cache: SparseCache, r: int, config: NexConfig = NexConfig()) -> np.ndarray:
    """Phase of each raw row of response ``r``: "E", "X", or "" for a row the method skips."""
    trace = analyze_response(cache.response_rows(r), config)
    out = np.full(len(window_bounds(cache, r)) - 1, "", dtype=object)
    out[trace.source] = np.where(trace.explore, "E", "X")
    return out


def score_annotation(cache_dir: str | os.PathLike, labels: str | os.PathLike,
                     config: NexConfig = NexConfig()) -> tuple[Agreement, pd.DataFrame]:
    """Compare an annotation CSV with the HMM phases of the cache it was exported from.

    Returns the agreement over the windows that have both labels and a table of every
    labelled window (``response``, ``row``, ``label``, ``hmm``; ``hmm`` blank for rows the
    method skips). A file whose windows do not match the cache's rows raises ``NexError``.
    """
    cache = SparseCache.open(cache_dir)
    table = read_labels(labels)
    if table.empty:
        raise NexError(f"{labels} has no labelled window: fill in E or X in the label column first")
    hmm = []
    for r, part in table.groupby("response", sort=True):
        if not 0 <= r < cache.n_responses:
            raise NexError(f"{labels} labels response {r}, but cache {cache.path} holds {cache.n_responses}: "
                           "score against the cache the windows were exported from")
        bounds, phases = window_bounds(cache, r), hmm_labels(cache, r, config)
        rows = part["row"].to_numpy()
        if rows.min() < 0 or rows.max() >= len(phases) or \
                (part["token_start"].to_numpy() != bounds[rows]).any() or \
                (part["token_end"].to_numpy() != bounds[rows + 1]).any():
            raise NexError(f"the windows of response {r} in {labels} do not match the rows of cache "
                           f"{cache.path}: score against the cache the windows were exported from")
        hmm.append(pd.Series(phases[rows], index=part.index))
    table["hmm"] = pd.concat(hmm)
    both = table[table["hmm"] != ""]
    if both.empty:
        raise NexError("none of the labelled windows has an HMM phase (the method skipped all their rows)")
    result = agreement(both["label"].map(PHASES).to_numpy(), both["hmm"].map(PHASES).to_numpy())
    return result, table[["response", "row", "label", "hmm"]]
