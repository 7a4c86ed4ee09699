"""Phases while the trace is written: the online counterpart of the Viterbi segmentation (NEX_METHOD section 3).

Viterbi labels a row from the whole response: its trend, median and MAD, the mixture fitted
to its z-scores, and the rows after it. While a response is generated none of these exist
yet, so the online phases read each row with constants calibrated offline on other
responses (``PhaseModel``, from a calibration cache whose rows the batch segmentation
labelled):

- the observation is the log novelty slope detrended against log-time with the calibration
  rows' pooled fit and robustly z-scored with their median and MAD:
  z_j = (log(1 + s_j) - a - b log(1 + j) - centre) / (MAD + 1e-6);
- the emission of each state is the mean and variance (floored at 1e-6) of z over the
  calibration rows Viterbi labelled X and E;
- forward filtering in the sticky HMM (start (0.5, 0.5), transitions [[rho, 1 - rho],
  [1 - rho, rho]]) gives P(E | z_0..z_j) after every row; a row is E when that exceeds 0.5;
- ``MinRun`` applies the minimum run online: a run counts once it holds ``min_run`` rows (or
  once it ends), so every label is final ``min_run - 1`` rows after its row, and on every
  prefix the labels equal ``phases.enforce_min_run`` of that prefix's raw labels.

How far the filtered labels lie from Viterbi's is measured, not assumed (docs/nex.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from nex_causal.errors import NexError
from nex_causal.nex.phases import EPS, VAR_FLOOR, check_params, log_slope, sticky_transitions

X, E = 0, 1  # the states' order in a PhaseModel's emissions


@dataclass(frozen=True)
class PhaseModel:
    """Calibrated constants of the online phases (see the module docstring); ``means``/``variances`` are
    (X, E)."""

    intercept: float
    slope: float
    centre: float
    scale: float
    means: tuple[float, float]
    variances: tuple[float, float]
    rho: float

    def z(self, slope: float, row: int) -> float:
        """The observation of usable row ``row`` (from 0) with novelty slope ``slope``."""
        y = float(log_slope(np.array([slope]))[0])
        return (y - self.intercept - self.slope * math.log1p(row) - self.centre) / (self.scale + EPS)


def fit_phase_model(responses: Iterable[tuple[np.ndarray, np.ndarray]], rho: float) -> PhaseModel:
    """The online phases' constants from calibration responses, each (novelty slopes, batch E labels) of its
    usable rows; responses of fewer than 3 rows (which the batch leaves unsegmented) are left out."""
    check_params(rho, 1)
    y, t, explore = [], [], []
    for slopes, labels in responses:
        if len(slopes) >= 3:
            y.append(log_slope(slopes))
            t.append(np.log1p(np.arange(len(slopes), dtype=np.float64)))
            explore.append(np.asarray(labels, bool))
    if not y:
        raise NexError("the calibration responses hold no response of 3 usable rows or more: calibrate the "
                       "online phases on a larger cache")
    y, t, explore = np.concatenate(y), np.concatenate(t), np.concatenate(explore)
    (intercept, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(t), t], axis=1), y, rcond=None)
    residual = y - intercept - slope * t
    centre = float(np.median(residual))
    scale = float(np.median(np.abs(residual - centre)))
    if not (explore.any() and (~explore).any()) or not np.isfinite(scale):
        raise NexError("the calibration rows need both explore and exploit rows to calibrate the online phases: "
                       "capture more responses, or responses with several cycles")
    z = (residual - centre) / (scale + EPS)
    means = (float(z[~explore].mean()), float(z[explore].mean()))
    variances = (max(float(z[~explore].var()), VAR_FLOOR), max(float(z[explore].var()), VAR_FLOOR))
    return PhaseModel(float(intercept), float(slope), centre, scale, means, variances, float(rho))


class PhaseFilter:
    """Forward filtering of one response: ``update(z)`` returns P(E | every z so far)."""

    def __init__(self, model: PhaseModel):
        self.model = model
        self.transitions = sticky_transitions(model.rho)
        self.belief: np.ndarray | None = None  # P(X), P(E) after the last row

    def update(self, z: float) -> float:
        means, variances = np.asarray(self.model.means), np.asarray(self.model.variances)
        log_lik = -0.5 * (np.log(2 * np.pi * variances) + (z - means) ** 2 / variances)
        prior = np.full(2, 0.5) if self.belief is None else self.belief @ self.transitions
        joint = prior * np.exp(log_lik - log_lik.max())
        self.belief = joint / joint.sum()
        return float(self.belief[E])


class MinRun:
    """The minimum run applied online: ``push`` raw labels one at a time; ``labels`` equals
    ``phases.enforce_min_run`` of the labels pushed so far, and ``final`` counts the leading labels that no
    later row can change."""

    def __init__(self, min_run: int):
        check_params(0.5, min_run)
        self.min_run = int(min_run)
        self.done: list[bool] = []  # labels of the completed runs
        self.raw: bool | None = None  # the current run's raw label, start and length
        self.start = self.length = 0

    def push(self, raw: bool) -> None:
        raw = bool(raw)
        if self.raw is None or raw == self.raw:
            self.raw = raw
            self.length += 1
            return
        first = self.start == 0
        label = self.raw if self.length >= self.min_run else (raw if first else self.done[-1])
        self.done += [label] * self.length
        self.raw, self.start, self.length = raw, self.start + self.length, 1

    @property
    def _current(self) -> bool:
        """The current run's label as it stands: its own once long enough (or when it is the only run)."""
        return self.raw if self.length >= self.min_run or self.start == 0 else self.done[-1]

    @property
    def labels(self) -> list[bool]:
        return self.done + [self._current] * self.length

    @property
    def final(self) -> int:
        """How many leading labels are final: the completed runs, and the current run once it is long enough."""
        return len(self.done) + (self.length if self.length >= self.min_run else 0)
