"""Sticky two-state HMM segmentation of one response into explore (E) and exploit (X) rows
(NEX_METHOD section 3).

The log novelty slope is detrended against log-time and robustly z-scored; a 2-component
Gaussian mixture fitted to z gives the emissions of a 2-state Gaussian HMM whose sticky
transitions are fixed (no Baum-Welch), and Viterbi decoding labels each row. The state with
the larger mean is E. Runs shorter than ``min_run`` are then absorbed by their neighbour.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from hmmlearn.hmm import GaussianHMM
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from nex_causal.errors import NexError

MAD_EPS = 1e-6
VAR_FLOOR = 1e-6
ROUNDING = 1e-9  # relative size below which a residual or MAD counts as 0 (floating-point rounding)


@dataclass(frozen=True)
class Phases:
    """Every intermediate of the segmentation, one value per row.

    ``method`` says which rule labelled the rows: "short" (fewer than 3 rows, all X; y only,
    ``residual`` and ``z`` are NaN), "sign" (MAD 0 or not finite), "hmm", or "fallback"
    (the mixture or HMM failed, E = z > 0). "0" means 0 up to floating-point rounding:
    below 1e-9 (1 + max |y|), so that a response whose y the trend fits exactly (constant
    slopes, say) is not segmented on rounding noise.
    """

    y: np.ndarray
    residual: np.ndarray
    z: np.ndarray
    explore: np.ndarray
    method: str


def log_slope(slopes: np.ndarray) -> np.ndarray:
    """Step 1: y_j = log(1 + max(s_j, 0))."""
    return np.log1p(np.maximum(np.asarray(slopes, np.float64), 0.0))


def detrend(y: np.ndarray) -> np.ndarray:
    """Step 2: residual of the least-squares fit y_j ~ a + b log(1 + j); y - median(y) if it fails."""
    design = np.column_stack([np.ones(len(y)), np.log1p(np.arange(len(y)))])
    try:
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
    except np.linalg.LinAlgError:
        coef = np.full(2, np.nan)
    if not np.isfinite(coef).all():
        return y - np.median(y)
    return y - design @ coef


def robust_z(residual: np.ndarray) -> tuple[np.ndarray, float]:
    """Step 3: z_j = (e_j - median(e)) / (MAD(e) + 1e-6); returns z and MAD(e)."""
    centred = residual - np.median(residual)
    mad = float(np.median(np.abs(centred)))
    return centred / (mad + MAD_EPS), mad


def sticky_transitions(rho: float) -> np.ndarray:
    """The fixed transition matrix [[rho, 1 - rho], [1 - rho, rho]]."""
    return np.array([[rho, 1.0 - rho], [1.0 - rho, rho]])


def hmm_explore(z: np.ndarray, rho: float) -> np.ndarray:
    """Step 6: Viterbi labels (True = E) of the sticky HMM with mixture-fitted emissions.

    Raises ValueError or LinAlgError when the mixture or the HMM cannot be built on ``z``.
    """
    obs = np.asarray(z, np.float64).reshape(-1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 50 iterations is the spec, converged or not
        mixture = GaussianMixture(n_components=2, covariance_type="diag", random_state=0, max_iter=50,
                                  reg_covar=1e-6).fit(obs)
    hmm = GaussianHMM(n_components=2, covariance_type="diag", init_params="", params="")
    hmm.startprob_ = np.array([0.5, 0.5])
    hmm.transmat_ = sticky_transitions(rho)
    hmm.means_ = mixture.means_
    hmm.covars_ = np.maximum(mixture.covariances_, VAR_FLOOR)
    with np.errstate(divide="ignore"):  # rho = 1 or 0: log(0) = -inf is the intended value
        states = hmm.predict(obs)
    return states == int(np.argmax(mixture.means_[:, 0]))


def enforce_min_run(explore: np.ndarray, min_run: int) -> np.ndarray:
    """Step 7: left to right, a run shorter than ``min_run`` takes the label of the run before it
    (the first run takes the label of the run after it)."""
    out = np.asarray(explore, bool).copy()
    bounds = np.flatnonzero(np.diff(out.astype(np.int8))) + 1
    starts, stops = np.r_[0, bounds], np.r_[bounds, len(out)]
    if len(starts) < 2:
        return out
    for start, stop in zip(starts, stops):
        if stop - start < min_run:
            out[start:stop] = out[start - 1] if start > 0 else out[stop]
    return out


def check_params(rho: float, min_run: int) -> None:
    if not 0.0 <= rho <= 1.0:
        raise NexError(f"rho must be a probability in [0, 1] (the sticky self-transition), got {rho}")
    if int(min_run) != min_run or min_run < 1:
        raise NexError(f"min_run must be a positive integer (rows), got {min_run}")


def phases(slopes: np.ndarray, rho: float = 0.95, min_run: int = 2) -> Phases:
    """Segment one response's novelty slopes into E/X rows, keeping every intermediate."""
    check_params(rho, min_run)
    y = log_slope(slopes)
    if len(y) < 3:
        nan = np.full(len(y), np.nan)
        return Phases(y, nan, nan, np.zeros(len(y), bool), "short")
    residual = detrend(y)
    z, mad = robust_z(residual)
    finite = np.abs(y[np.isfinite(y)])
    rounding = ROUNDING * (1.0 + (finite.max() if finite.size else 0.0))  # what an exact fit leaves, not 0
    if not (np.isfinite(mad) and mad > rounding):
        explore, method = residual - np.median(residual) > rounding, "sign"
    else:
        try:
            explore, method = hmm_explore(z, rho), "hmm"
        except (ValueError, np.linalg.LinAlgError):
            explore, method = z > 0, "fallback"
    return Phases(y, residual, z, enforce_min_run(explore, min_run), method)


def segment(slopes: np.ndarray, rho: float = 0.95, min_run: int = 2) -> np.ndarray:
    """E/X label of each row (True = explore)."""
    return phases(slopes, rho, min_run).explore
