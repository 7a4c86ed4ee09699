"""Explore-to-exploit cycles, reuse credit and neuron weights (NEX_METHOD sections 4-5).

A cycle is a maximal E run followed by a maximal X run. It is judged by how much of the X
run's mass falls on neurons the E run introduced (its reuse share), relative to the other
cycles of the response (progress), and how much the novelty slope drops after the E run
(consolidation). The neurons an E run introduced are credited, with their mass in the row
that introduced them times the cycle's scale, to Eff (effective cycles) or Red (redundant
ones); w_n = tanh(log((Eff + 1e-6) / (Red + 1e-6))) over the calibration set.

Everything is numpy over a response's rows and entries; the only loop over responses is
the per-response HMM fit, and the only loop inside a response is over its few cycles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from nex_causal.cache import KEY_SPACE, ResponseRows, SparseCache
from nex_causal.errors import NexError
from nex_causal.io import atomic_path
from nex_causal.nex.novelty import Novelty, clean_rows, novelty
from nex_causal.nex.phases import check_params, phases

EPS = 1e-6
WEIGHTS_NAME = "weights"  # the one array of a weights .npz file


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


def runs(explore: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(e_start, e_end, x_start, x_end) of every maximal E run followed by a maximal X run."""
    explore = np.asarray(explore, bool)
    bounds = np.flatnonzero(np.diff(explore.astype(np.int8))) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(explore)] - 1
    return [(int(starts[i]), int(ends[i]), int(starts[i + 1]), int(ends[i + 1]))
            for i in range(len(starts) - 1) if explore[starts[i]]]


def reuse_share(nov: Novelty, e_start: int, e_end: int, x_start: int, x_end: int) -> float:
    """r_c: the share of the X rows' mass on neurons introduced in the E run (NaN if that mass is 0)."""
    span = nov.rows.span(x_start, x_end)
    mass, first = nov.rows.mass[span], nov.first_row[span]
    total = mass.sum()
    return mass[(first >= e_start) & (first <= e_end)].sum() / (total + EPS) if total > 0 else np.nan


def cycles(nov: Novelty, explore: np.ndarray) -> list[Cycle]:
    """Strength, consolidation, reuse share, progress and credit kind of each cycle of a response."""
    s = nov.slopes
    found = runs(explore)
    if not found:
        return []
    overall = np.median(s)
    measured = []
    for e_start, e_end, x_start, x_end in found:
        s_e, s_x = np.median(s[e_start:e_end + 1]), np.median(s[x_start:x_end + 1])
        strength = float(s_e - overall)
        consolidation = float(np.clip(1.0 - s_x / (s_e + EPS), 0.0, 1.0)) if s_e > 0 else 0.0
        introduced = nov.introduced[nov.rows.span(e_start, e_end)].any()
        share = reuse_share(nov, e_start, e_end, x_start, x_end) if strength > 0 and introduced else np.nan
        measured.append((strength, consolidation, float(share)))
    shares = np.array([share for _, _, share in measured])
    defined = shares[np.isfinite(shares)]
    centre = np.median(defined) if len(defined) else np.nan
    return [Cycle(*run, strength, consolidation, share, float(share - centre),
                  *classify(float(share - centre), consolidation))
            for run, (strength, consolidation, share) in zip(found, measured)]


def classify(progress: float, consolidation: float) -> tuple[str, float]:
    """(kind, scale) of a cycle: effective with Delta * kappa when Delta > 0 and kappa > 0,
    none when Delta is 0 or undefined, redundant with |Delta| otherwise."""
    if not np.isfinite(progress) or progress == 0:
        return "none", 0.0
    if progress > 0 and consolidation > 0:
        return "effective", progress * consolidation
    return "redundant", abs(progress)


def credit(nov: Novelty, found: list[Cycle]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, eff, red) per credited entry: neurons introduced in a crediting cycle's E run,
    with m[j, n] * scale in the column of the cycle's kind."""
    rows = nov.rows
    keys, eff, red = [np.empty(0, np.uint32)], [np.empty(0)], [np.empty(0)]
    for c in found:
        if c.kind == "none":
            continue
        span = rows.span(c.e_start, c.e_end)
        new = nov.introduced[span]
        amount = rows.mass[span][new] * c.scale
        keys.append(rows.keys[span][new])
        eff.append(amount if c.kind == "effective" else np.zeros_like(amount))
        red.append(amount if c.kind == "redundant" else np.zeros_like(amount))
    return np.concatenate(keys), np.concatenate(eff), np.concatenate(red)


@dataclass(frozen=True)
class ResponseTrace:
    """Every per-response result of NEX, for notebooks and figures.

    Arrays are per usable row (``source``: their raw row indices); ``explore`` is True for E
    rows; ``credit_keys`` with ``eff``/``red`` is what the response adds to Eff and Red.
    """

    source: np.ndarray
    tokens: np.ndarray
    slopes: np.ndarray
    y: np.ndarray
    z: np.ndarray
    explore: np.ndarray
    method: str
    cycles: list[Cycle]
    credit_keys: np.ndarray
    eff: np.ndarray
    red: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Alias of ``explore`` (True = E)."""
        return self.explore


def analyze_response(rows: ResponseRows, rho: float = 0.95, min_run: int = 2) -> ResponseTrace:
    """Sections 1-4 on one response: clean, novelty, segmentation, cycles and credit."""
    nov = novelty(clean_rows(rows))
    seg = phases(nov.slopes, rho, min_run)
    found = cycles(nov, seg.explore)
    keys, eff, red = credit(nov, found)
    return ResponseTrace(nov.rows.source, nov.rows.tokens, nov.slopes, seg.y, seg.z, seg.explore, seg.method,
                         found, keys, eff, red)


def neuron_weights(eff: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Section 5: w_n = tanh(log((Eff[n] + 1e-6) / (Red[n] + 1e-6))) as float32; 0 where uncredited."""
    eff, red = np.asarray(eff, np.float64), np.asarray(red, np.float64)
    if eff.shape != red.shape or (eff < 0).any() or (red < 0).any():
        raise NexError("Eff and Red must be non-negative arrays of one shape")
    return np.tanh(np.log((eff + EPS) / (red + EPS))).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """Learned weights with the Eff/Red mass they came from and, on request, every response's trace."""

    weights: np.ndarray
    eff: np.ndarray
    red: np.ndarray
    n_responses: int
    traces: list[ResponseTrace] | None


def learn(cache: SparseCache, rho: float = 0.95, min_run: int = 2, max_responses: int = 0,
          progress: bool = True, keep_traces: bool = False) -> Calibration:
    """Accumulate Eff/Red over the first ``max_responses`` responses (0: all) and derive the weights."""
    check_params(rho, min_run)
    if int(max_responses) != max_responses or max_responses < 0:
        raise NexError(f"max_responses must be a non-negative integer (0 = all), got {max_responses}")
    n = cache.n_responses if max_responses == 0 else min(int(max_responses), cache.n_responses)
    eff, red = np.zeros(KEY_SPACE), np.zeros(KEY_SPACE)
    traces = [] if keep_traces else None
    # One BLAS/OpenMP thread: the per-response mixture fits are tiny, and thread start-up
    # costs more than they do (3x slower with the default pool on a 2-core machine).
    with threadpool_limits(limits=1):
        for r in tqdm(range(n), desc="nex train", unit="resp", disable=not progress, mininterval=0.5):
            trace = analyze_response(cache.response_rows(r), rho, min_run)
            np.add.at(eff, trace.credit_keys, trace.eff)
            np.add.at(red, trace.credit_keys, trace.red)
            if traces is not None:
                traces.append(trace)
    return Calibration(neuron_weights(eff, red), eff, red, n, traces)


def learn_weights(cache: SparseCache, rho: float = 0.95, min_run: int = 2, max_responses: int = 0,
                  progress: bool = True) -> np.ndarray:
    """Neuron weights (float32, length 2**22, indexed by packed key) learned on ``cache``."""
    return learn(cache, rho, min_run, max_responses, progress).weights


def save_weights(path: str | os.PathLike, weights: np.ndarray) -> None:
    """Write ``weights`` as the reference's ``.npz``: one float32 array named ``weights``."""
    weights = check_weights(weights)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{WEIGHTS_NAME: weights})


def load_weights(path: str | os.PathLike) -> np.ndarray:
    """Read and check a weights ``.npz`` (as written here or by the reference release)."""
    try:
        with np.load(path) as archive:
            if WEIGHTS_NAME not in archive.files:
                raise NexError(f"{path} has no array named '{WEIGHTS_NAME}' (it has {archive.files}); "
                               "pass a file written by `nex-causal nex train`")
            weights = archive[WEIGHTS_NAME]
    except (OSError, ValueError) as err:
        raise NexError(f"cannot read weights {path}: {err}; pass a .npz written by `nex-causal nex train`") from None
    return check_weights(weights, str(path))


def check_weights(weights: np.ndarray, name: str = "weights") -> np.ndarray:
    """``weights`` as float32 after checking its shape (2**22) and that every value is finite."""
    weights = np.asarray(weights)
    if weights.shape != (KEY_SPACE,):
        raise NexError(f"{name} has shape {weights.shape}, expected ({KEY_SPACE},): one weight per packed "
                       "key (layer << 16) | unit")
    if not np.isfinite(weights).all():
        raise NexError(f"{name} holds non-finite values; re-learn them with `nex-causal nex train`")
    return weights.astype(np.float32, copy=False)
