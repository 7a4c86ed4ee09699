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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nex_causal.cache import ResponseRows
from nex_causal.errors import NexError
from nex_causal.nex.config import NexConfig
from nex_causal.nex.novelty import Novelty, clean_rows, key_scratch, novelty
from nex_causal.nex.phases import segment
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


def reuse_share(nov: Novelty, e_start: int, e_end: int, x_start: int, x_end: int,
                totals: np.ndarray) -> float:
    """r_c: the share of the X rows' mass on neurons the E run introduced (NaN if that mass is 0).

    ``totals`` are the float32 mass sums of every row, as Python floats in a float64 array.
    """
    rows, add = nov.rows, np.add.reduce  # np.sum's own reduction, without its wrapper
    span = rows.span(x_start, x_end)
    first, mass = nov.first_row[span], rows.mass[span]
    in_e = (first >= e_start) & (first <= e_end)
    bounds = rows.row_ptr[x_start:x_end + 2] - rows.row_ptr[x_start]
    reused = 0.0
    for a, b in zip(bounds[:-1], bounds[1:]):
        reused += float(add(mass[a:b][in_e[a:b]]))
    total = float(add(totals[x_start:x_end + 1]))
    return reused / (total + EPS) if total > 0.0 else float("nan")


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


def cycles(nov: Novelty, explore: np.ndarray) -> list[Cycle]:
    """Strength, consolidation, reuse share, progress and credit kind of each cycle of a response."""
    s = nov.slopes
    found = explore_exploit_runs(explore)
    if not found:
        return []
    overall = float(np.median(s))
    rows, add = nov.rows, np.add.reduce
    totals = np.asarray([float(add(rows.mass[a:b])) for a, b in zip(rows.row_ptr[:-1], rows.row_ptr[1:])],
                        np.float64)
    measured = []
    for e_start, e_end, x_start, x_end in found:
        s_e, s_x = float(np.median(s[e_start:e_end + 1])), float(np.median(s[x_start:x_end + 1]))
        strength = s_e - overall
        consolidation = float(np.clip(1.0 - s_x / (s_e + EPS), 0.0, 1.0)) if s_e > 0.0 else 0.0
        introduced = bool(nov.introduced[nov.rows.span(e_start, e_end)].any())
        share = (reuse_share(nov, e_start, e_end, x_start, x_end, totals) if strength > 0.0 and introduced
                 else float("nan"))
        measured.append((strength, consolidation, share))
    defined = np.asarray([m[2] for m in measured if np.isfinite(m[2])], dtype=np.float32)
    centre = float(np.median(defined)) if defined.size else float("nan")
    out = []
    for run, (strength, consolidation, share) in zip(found, measured):
        progress = share - centre
        out.append(Cycle(*run, strength, consolidation, share, progress, *classify(progress, consolidation)))
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


def credit(nov: Novelty, found: list[Cycle], skip_opening: bool = False) -> Credit:
    """Neurons introduced in a crediting cycle's E run, with m[j, n] * scale (float32); with ``skip_opening``
    (a named departure) the first cycle credits nothing."""
    rows, parts = nov.rows, []
    for i, c in enumerate(found):
        if c.kind == "none" or (skip_opening and i == 0):
            continue
        span = rows.span(c.e_start, c.e_end)
        new = nov.introduced[span]
        keys, mass = rows.keys[span][new], rows.mass[span][new]
        # a key repeated in its row is credited once, with its last copy's mass
        scratch, order = key_scratch(), np.arange(len(keys), dtype=np.int32)
        scratch[keys] = order
        last = scratch[keys] == order
        parts.append((keys[last], mass[last] * np.float32(c.scale), np.full(int(last.sum()), c.kind == "effective")))
    if not parts:
        return Credit.empty()
    return Credit(*(np.concatenate(p) for p in zip(*parts)))


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


def analyze_response(rows: ResponseRows, config: NexConfig = NexConfig()) -> ResponseTrace:
    """Sections 1-4 on one response: clean, novelty, segmentation, cycles and credit."""
    nov = novelty(clean_rows(rows, positive_only=config.positive_only))
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
