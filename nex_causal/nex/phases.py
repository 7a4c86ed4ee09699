"""Sticky two-state HMM segmentation of one response into explore (E) and exploit (X) rows
(NEX_METHOD section 3), with the reference release's arithmetic.

The log novelty slope is detrended against log-time and robustly z-scored; a 2-component
Gaussian mixture (scikit-learn) fitted to z gives the emissions of a 2-state Gaussian HMM
(hmmlearn) whose sticky transitions are fixed (no Baum-Welch), and Viterbi decoding labels
each row. The state with the larger mean is E. Runs shorter than ``min_run`` are then
absorbed by their neighbour. Where the reference's choice is arguable, the alternative is
an option: ``mad_rounding`` treats a MAD within floating-point rounding of 0 as 0 (the
reference tests ``mad <= 0`` exactly, so slopes that the trend fits exactly get segmented
on rounding noise).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from nex_causal.errors import NexError
from nex_causal.nex.runlength import runs

EPS = 1e-6  # MAD offset of the z-score
VAR_FLOOR = 1e-6  # floor of the mixture's variances
ROUNDING = 1e-9  # with mad_rounding: a MAD below 1e-9 (1 + max |y|) counts as 0


@dataclass(frozen=True)
class Phases:
    """Every intermediate of the segmentation, one value per row.

    ``z`` is the observation the labels come from: the robust z-score, or, when the MAD is
    0 ("sign"), the centred residual. ``method`` says which rule labelled the rows:
    "short" (fewer than 3 rows, all X; only ``y`` is defined), "sign" (E = residual above
    its median), "hmm", or "fallback" (the mixture or HMM raised: E = z > 0).
    """

    y: np.ndarray
    residual: np.ndarray
    z: np.ndarray
    explore: np.ndarray
    method: str


def check_params(rho: float, min_run: int) -> None:
    """One-line NexError for the parameters the reference refuses."""
    if not (np.isfinite(rho) and 0.0 < rho < 1.0):
        raise NexError(f"rho must lie strictly between 0 and 1 (the sticky self-transition), got {rho}")
    if int(min_run) != min_run or min_run < 1:
        raise NexError(f"min_run must be a positive integer (rows), got {min_run}")


def log_slope(slopes: np.ndarray) -> np.ndarray:
    """Step 1: y_j = log(1 + max(s_j, 0))."""
    return np.log1p(np.clip(np.asarray(slopes, np.float64), 0.0, None))


def detrend(y: np.ndarray) -> np.ndarray:
    """Step 2: the residual of y against a + b log(1 + j) (y - median(y) if the fit fails)."""
    time = np.arange(y.size, dtype=np.float64)
    design = np.stack((np.ones_like(time), np.log1p(time)), axis=1)
    try:
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        return y - design @ coef
    except Exception:  # the reference falls back on any failure of the fit
        return y - float(np.median(y))


def sticky_transitions(rho: float) -> np.ndarray:
    """The fixed transition matrix [[rho, 1 - rho], [1 - rho, rho]]."""
    return np.asarray([[rho, 1.0 - rho], [1.0 - rho, rho]], dtype=np.float64)


@functools.cache
def backends() -> SimpleNamespace:
    """scikit-learn's and hmmlearn's pieces the segmentation calls, imported once.

    Import them before starting worker processes or limiting thread pools: a pool that is
    limited before scikit-learn loads its OpenMP runtime is not limited at all.
    """
    from hmmlearn import _hmmc
    from hmmlearn.stats import log_multivariate_normal_density
    from sklearn.cluster import _kmeans
    from sklearn.mixture import GaussianMixture
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    from sklearn.utils.extmath import row_norms

    return SimpleNamespace(kmeans=_kmeans, GaussianMixture=GaussianMixture, row_norms=row_norms,
                           omp_threads=_openmp_effective_n_threads, hmmc=_hmmc,
                           log_density=log_multivariate_normal_density)


def fit_mixture(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and variances of ``GaussianMixture(2, "diag", random_state=0, max_iter=50,
    reg_covar=1e-6).fit(values)``, computed by the estimator's own steps.

    ``fit`` spends most of its time validating its input and limiting thread pools around
    its k-means initialisation; this runs the same functions on the same arrays in the same
    order (k-means++ seeding and Lloyd iterations of ``KMeans(2, n_init=1)``, then EM until
    the lower bound moves by less than ``tol``), so the result is the same to the bit and
    the same exceptions are raised. ``tests/test_nex_phases.py`` holds it against ``fit``.
    """
    lib = backends()
    if not np.isfinite(values).all():  # what fit's input validation refuses
        raise ValueError("the mixture's input holds NaN or infinity")
    mixture = lib.GaussianMixture(n_components=2, covariance_type="diag", random_state=0, max_iter=50,
                              reg_covar=1e-6)
    random_state = np.random.RandomState(0)
    centred = np.array(values, dtype=np.float64, order="C", copy=True)
    tol = lib.kmeans._tolerance(centred, 1e-4)
    centred -= centred.mean(axis=0)
    weight = np.ones(centred.shape[0], dtype=centred.dtype)
    seeds, _ = lib.kmeans._kmeans_plusplus(centred, 2, lib.row_norms(centred, squared=True), weight, random_state)
    labels = lib.kmeans._kmeans_single_lloyd.__wrapped__(centred, weight, seeds, max_iter=300, verbose=False,
                                                         tol=tol, n_threads=lib.omp_threads())[0]
    resp = np.zeros((centred.shape[0], 2), dtype=centred.dtype)
    resp[np.arange(centred.shape[0]), labels] = 1
    mixture._initialize(values, resp)
    lower_bound = -np.inf
    for _ in range(mixture.max_iter):
        previous = lower_bound
        log_prob_norm, log_resp = mixture._e_step(values)
        mixture._m_step(values, log_resp)
        lower_bound = mixture._compute_lower_bound(log_resp, log_prob_norm)
        if abs(lower_bound - previous) < mixture.tol:
            break
    return mixture.means_, mixture.covariances_


def viterbi(values: np.ndarray, means: np.ndarray, variances: np.ndarray, rho: float) -> np.ndarray:
    """Most likely states of ``GaussianHMM(2, "diag")`` with start (0.5, 0.5), the sticky
    transitions and the given emissions: ``decode(values, algorithm="viterbi")`` less its
    input checks (the same emission densities and the same compiled Viterbi)."""
    lib = backends()
    frames = lib.log_density(values, means, variances, "diag")
    return lib.hmmc.viterbi(np.asarray([0.5, 0.5]), sticky_transitions(rho), frames)[1]


def hmm_explore(z: np.ndarray, rho: float) -> np.ndarray:
    """Step 6: Viterbi labels (True = E) of the sticky HMM with mixture-fitted emissions."""
    values = z.reshape(-1, 1)
    means, variances = fit_mixture(values)
    states = viterbi(values, means.reshape(-1, 1), np.clip(variances.reshape(-1), VAR_FLOOR, None).reshape(-1, 1),
                     rho)
    return states == int(np.argmax(means.reshape(-1)))


def enforce_min_run(explore: np.ndarray, min_run: int) -> np.ndarray:
    """Step 7: left to right, a run shorter than ``min_run`` takes the (possibly relabelled)
    label of the run before it; a short first run takes the label of the run after it."""
    out = np.asarray(explore, bool).copy()
    found = runs(out)
    if min_run <= 1 or len(found) < 2:
        return out
    for _, first, last in found:
        if last - first + 1 < min_run:
            out[first:last + 1] = out[first - 1] if first > 0 else out[last + 1]
    return out


def segment(slopes: np.ndarray, rho: float = 0.95, min_run: int = 2, *, mad_rounding: bool = False) -> Phases:
    """Segment one response's novelty slopes into E/X rows, keeping every intermediate."""
    check_params(rho, min_run)
    y = log_slope(slopes)
    if y.size < 3:
        nan = np.full(y.size, np.nan)
        return Phases(y, nan, nan, np.zeros(y.size, bool), "short")
    residual = detrend(y)
    median = float(np.median(residual))
    mad = float(np.median(np.abs(residual - median)))
    zero = ROUNDING * (1.0 + float(np.abs(y).max())) if mad_rounding else 0.0
    if not np.isfinite(mad) or mad <= zero:
        centred = residual - median
        explore, method, z = centred > zero, "sign", centred
    else:
        z = (residual - median) / (mad + EPS)
        try:
            explore, method = hmm_explore(z, rho), "hmm"
        except Exception:  # the reference falls back on any failure of the mixture or the HMM
            explore, method = z > 0.0, "fallback"
    return Phases(y, residual, z, enforce_min_run(explore, int(min_run)), method)
