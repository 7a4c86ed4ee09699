"""Explore-to-exploit cycles, reuse credit and neuron weights (NEX_METHOD sections 4-5).

A cycle is a maximal E run followed by a maximal X run. It is judged by how much of the X
run's mass falls on neurons the E run introduced (its reuse share), relative to the other
cycles of the response (progress), and how much the novelty slope drops after the E run
(consolidation). The neurons an E run introduced are credited, with their mass in the row
that introduced them times the cycle's scale, to Eff (effective cycles) or Red (redundant
ones); w_n = tanh(log((Eff + 1e-6) / (Red + 1e-6))) over the calibration set.

The arithmetic is the reference release's, operation for operation, so that weights agree
to the last bit: medians of float32 slopes, float32 row sums added up in float64, the
median reuse share taken in float32 (so a response with one cycle credits it by the
rounding residue of its share), float32 Eff/Red, and a key repeated inside a row credited
once, with the mass of its last copy (the reference's fancy-index ``+=``).

Learning over a calibration set (workers, Eff/Red accumulation) is ``nex.learn``.

Time: a response's cycles are measured together, with no loop over rows: run medians from
one sort, reuse shares from a few passes over the entries (row sums as ``np.sum`` takes
them, ``segment_sums``), so for 30,000 entries ``cycles`` costs ~0.25 ms (half of it those
passes, half building the cycles) and ``credit`` ~0.06 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nex_causal.cache import KEY_SPACE, ResponseRows
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.novelty import (
    Novelty,
    clean_rows,
    key_scratch,
    novelty,
    per_row,
    segment_sums,
)
from nex_causal.nex.phases import median, segment
from nex_causal.nex.runlength import runs

EPS = 1e-6
MIN_ROWS = 3  # a response with fewer usable rows adds no credit


@dataclass(frozen=True)
class Cycle:
    """One E run [e_start, e_end] followed by an X run [x_start, x_end] (inclusive usable-row indices).

    ``reuse`` and ``progress`` are NaN where undefined; ``kind`` is "effective", "redundant",
    or "none" (credits nothing), and ``scale`` the factor its introduced mass is credited with.
    """

    e_start: int
    e_end: int
    x_start: int
    x_end: int
    strength: float
    consolidation: float
    reuse: float
    progress: float
    kind: str
    scale: float


def explore_exploit_runs(explore: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(e_start, e_end, x_start, x_end) of every maximal E run followed by a maximal X run."""
    found = runs(explore)
    return [(a, b, c, d) for (is_e, a, b), (_, c, d) in zip(found, found[1:]) if is_e]


def run_medians(values: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """``np.median(values[a:b])`` of each run ``[a, b)`` of a partition of ``values``, rounded as it rounds
    (the mean of the two middle values in ``values``' dtype), from one sort."""
    lengths = stops - starts
    ordered = values[np.lexsort((values, np.repeat(np.arange(len(starts)), lengths)))]
    low, high = ordered[starts + (lengths - 1) // 2], ordered[starts + lengths // 2]
    return (low + high) / values.dtype.type(2)


def classify(progress: float, consolidation: float) -> tuple[str, float]:
    """(kind, scale) of a cycle: effective with Delta * kappa when Delta > 0 and kappa > 0,
    none when Delta is 0 or undefined, redundant with |Delta| otherwise."""
    if not np.isfinite(progress) or progress == 0.0:
        return "none", 0.0
    effective = progress > 0.0 and consolidation > 0.0
    scale = progress * consolidation if effective else abs(progress)
    if not np.isfinite(scale) or scale <= 0.0:
        return "none", 0.0
    return ("effective" if effective else "redundant"), scale


def reuse_shares(nov: Novelty, e_start: np.ndarray, e_end: np.ndarray, x_start: np.ndarray,
                 x_end: np.ndarray) -> np.ndarray:
    """r_c of each cycle: the share of its X rows' mass on neurons its E run introduced (NaN if that mass is 0).

    The reference adds the float32 sum of each X row's reused mass into a float64 total, row by
    row; so does this, from one pass over the response's entries.
    """
    rows = nov.rows
    first_e = np.full(rows.n_rows, rows.n_rows)  # for an X row of a measured cycle, its cycle's E run
    after_e = np.zeros(rows.n_rows, np.int64)  # (other rows: an empty range)
    for cycle in range(len(e_start)):
        x_run = slice(x_start[cycle], x_end[cycle] + 1)
        first_e[x_run], after_e[x_run] = e_start[cycle], e_end[cycle] + 1
    sizes = np.diff(rows.row_ptr)
    reused = (nov.first_row >= np.repeat(first_e, sizes)) & (nov.first_row < np.repeat(after_e, sizes))
    reused_mass = segment_sums(rows.mass[reused], per_row(reused, rows.row_ptr)).astype(np.float64)
    out = np.empty(len(e_start))
    for cycle, (a, b) in enumerate(zip(x_start, x_end + 1)):
        total = float(np.add.reduce(rows.totals[a:b]))
        out[cycle] = np.cumsum(reused_mass[a:b])[-1] / (total + EPS) if total > 0.0 else np.nan
    return out


def cycles(nov: Novelty, explore: np.ndarray) -> list[Cycle]:
    """Strength, consolidation, reuse share, progress and credit kind of each cycle of a response."""
    found = explore_exploit_runs(explore)
    if not found:
        return []
    s, bounds = nov.slopes, np.array(found)
    e_start, e_end, x_start, x_end = bounds.T
    first = e_start[0]  # the cycles' runs tile rows first..x_end[-1]: E, X, E, X, ...
    medians = run_medians(s[first:x_end[-1] + 1], bounds[:, 0::2].ravel() - first,
                          bounds[:, 1::2].ravel() + 1 - first).astype(np.float64)
    s_e, s_x = medians[0::2], medians[1::2]
    strength = s_e - float(median(s))
    consolidation = np.where(s_e > 0.0, np.clip(1.0 - s_x / (s_e + EPS), 0.0, 1.0), 0.0)  # slopes are >= 0
    new = np.concatenate([[0], np.cumsum(nov.n_new)])
    measured = (strength > 0.0) & (new[e_end + 1] > new[e_start])
    share = np.full(len(found), np.nan)
    share[measured] = reuse_shares(nov, e_start[measured], e_end[measured], x_start[measured], x_end[measured])
    defined = share[np.isfinite(share)].astype(np.float32)
    centre = float(median(defined)) if defined.size else float("nan")
    out = []
    for c, run in enumerate(found):
        progress = float(share[c]) - centre
        out.append(Cycle(*run, float(strength[c]), float(consolidation[c]), float(share[c]), progress,
                         *classify(progress, float(consolidation[c]))))
    return out


@dataclass(frozen=True)
class Credit:
    """What one response adds to Eff or Red: distinct keys, float32 amounts, and which go to Eff."""

    keys: np.ndarray
    amount: np.ndarray
    effective: np.ndarray

    @classmethod
    def empty(cls) -> Credit:
        return cls(np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, bool))

    def add_to(self, eff: np.ndarray, red: np.ndarray) -> None:
        """Add the amounts into the float32 accumulators (keys are distinct, so ``+=`` is exact)."""
        eff[self.keys[self.effective]] += self.amount[self.effective]
        red[self.keys[~self.effective]] += self.amount[~self.effective]

    def slots(self) -> np.ndarray:
        """Where each amount goes in Eff and Red laid end to end: the key, or the key + 2**22 for Red."""
        return self.keys + np.where(self.effective, 0, KEY_SPACE)


def credit(nov: Novelty, found: list[Cycle], skip_opening: bool = False) -> Credit:
    """Neurons introduced in a crediting cycle's E run, with m[j, n] * scale (float32); with ``skip_opening``
    (a named departure) the first cycle credits nothing."""
    rows = nov.rows
    crediting = np.zeros(rows.n_rows, bool)
    scale = np.zeros(rows.n_rows, np.float32)
    effective = np.zeros(rows.n_rows, bool)
    for i, c in enumerate(found):
        if c.kind == "none" or (skip_opening and i == 0):
            continue
        e_run = slice(c.e_start, c.e_end + 1)
        crediting[e_run], scale[e_run], effective[e_run] = True, c.scale, c.kind == "effective"
    if not crediting.any():
        return Credit.empty()
    new = nov.introduced & np.repeat(crediting, np.diff(rows.row_ptr))
    keys, mass = rows.keys[new], rows.mass[new]
    scale, effective = np.repeat(scale[crediting], nov.n_new[crediting]), np.repeat(effective[crediting],
                                                                                      nov.n_new[crediting])
    if int(nov.n_new.sum()) > nov.n_neurons:  # a key repeated in its row is credited once, with its last copy's mass
        scratch, order = key_scratch(), np.arange(len(keys), dtype=np.int32)
        scratch[keys] = order
        last = scratch[keys] == order
        keys, mass, scale, effective = keys[last], mass[last], scale[last], effective[last]
    return Credit(keys, mass * scale, effective)


@dataclass(frozen=True)
class ResponseTrace:
    """Every per-response result of NEX, for notebooks and figures.

    Arrays are per usable row (``source``: their raw row indices); ``explore`` is True for E
    rows; ``credit`` is what the response adds to Eff and Red (empty when it has fewer
    than 3 usable rows).
    """

    source: np.ndarray
    tokens: np.ndarray
    slopes: np.ndarray
    y: np.ndarray
    z: np.ndarray
    explore: np.ndarray
    method: str
    cycles: list[Cycle]
    credit: Credit
    neurons: int  # distinct neurons of the usable rows (each introduced once)


def analyze_response(rows: ResponseRows, config: NexConfig = NexConfig(),
                     seen: np.ndarray | None = None) -> ResponseTrace:
    """Sections 1-4 on one response: clean, novelty, segmentation, cycles and credit; ``seen``: the keys its
    prompt selected (``NexConfig.prompt_seen``), never introduced."""
    nov = novelty(clean_rows(rows, positive_only=config.positive_only), seen)
    seg = segment(nov.slopes, config.rho, config.min_run, mad_rounding=config.mad_rounding)
    found = cycles(nov, seg.explore) if nov.rows.n_rows >= MIN_ROWS else []
    return ResponseTrace(nov.rows.source, nov.rows.tokens, nov.slopes, seg.y, seg.z, seg.explore, seg.method,
                         found, credit(nov, found, config.skip_opening), nov.n_neurons)


WEIGHTINGS = ("tanh", "eff", "eff-red")


def neuron_weights(eff: np.ndarray, red: np.ndarray, weighting: str = "tanh") -> np.ndarray:
    """Section 5 in float32: w_n = tanh(log((Eff[n] + 1e-6) / (Red[n] + 1e-6))); 0 where uncredited.

    The named departures (``NexConfig.weighting``): ``eff``, Eff / max Eff; ``eff-red``,
    (Eff - Red) / max |Eff - Red|. Both keep the sign of the evidence and its size, so a
    neuron credited once and one credited a thousand times no longer tie at 1.
    """
    eff, red = np.asarray(eff, np.float32), np.asarray(red, np.float32)
    if eff.shape != red.shape or (eff < 0).any() or (red < 0).any():
        raise NexError("Eff and Red must be non-negative arrays of one shape")
    if weighting == "tanh":
        return np.tanh(np.log((eff + EPS) / (red + EPS))).astype(np.float32)
    if weighting not in WEIGHTINGS:
        raise NexError(f"unknown weighting {weighting!r}: use one of {', '.join(WEIGHTINGS)}")
    evidence = eff.astype(np.float64) - (red if weighting == "eff-red" else 0.0)
    top = np.abs(evidence).max(initial=0.0)
    return (evidence / top if top > 0 else evidence).astype(np.float32)
