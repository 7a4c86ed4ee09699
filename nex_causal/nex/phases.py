"""Sticky two-state HMM segmentation of one response into explore (E) and exploit (X) rows
(NEX_METHOD section 3), with the reference release's arithmetic.

The log novelty slope is detrended against log-time and robustly z-scored; a 2-component
Gaussian mixture fitted to z (scikit-learn's ``GaussianMixture``, computed here operation for
operation without importing scikit-learn) gives the emissions of a 2-state Gaussian HMM
whose sticky transitions are fixed (no Baum-Welch), and Viterbi decoding (hmmlearn's
compiled kernel) labels each row. The state with the larger mean is E. Runs shorter than
``min_run`` are then absorbed by their neighbour. Where the reference's choice is arguable,
the alternative is an option: ``mad_rounding`` treats a MAD within floating-point rounding
of 0 as 0 (the reference tests ``mad <= 0`` exactly, so slopes that the trend fits exactly
get segmented on rounding noise).

Time: about a third of learning. A response of ~100 rows takes ~0.45 ms, ~0.3 ms of it the
mixture fit (k-means ~0.1 ms, EM ~0.2 ms: some 150 numpy calls on arrays of ~100 values, so
call overhead, not arithmetic), the rest least squares, medians and the Viterbi kernel.
Fits cannot share calls across responses: their sums must keep each response's shapes.
"""

from __future__ import annotations

import functools
import math
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


def median(values: np.ndarray) -> np.floating:
    """``np.median`` of a non-empty 1-D array, to the bit, without its overhead (a third of a segmentation's medians'
    time): the middle of one sort, or the mean of the two middle values as ``np.mean`` takes it, in the array's
    dtype; NaN when the array holds one."""
    ordered = np.sort(values)
    half = len(ordered) // 2
    if np.isnan(ordered[-1]):  # NaN sorts last
        return ordered[-1]
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


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
    """hmmlearn's compiled Viterbi, imported once (before worker processes start, so that they inherit it)."""
    from hmmlearn import _hmmc

    return SimpleNamespace(hmmc=_hmmc)


MAX_ITER, TOL, REG_COVAR = 50, 1e-3, 1e-6  # the reference's mixture: 50 EM steps, scikit-learn's tol, reg_covar
NK_FLOOR = 10 * np.finfo(np.float64).eps  # scikit-learn adds it to every component's mass
LOG_2PI = math.log(2 * math.pi)
KMEANS_TOL, KMEANS_MAX_ITER = 1e-4, 300  # KMeans' defaults
DRAWS = np.random.RandomState(0).random_sample(3)  # all that k-means++ (2 clusters) draws from RandomState(0)


def fit_mixture(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and variances of ``GaussianMixture(2, "diag", random_state=0, max_iter=50,
    reg_covar=1e-6).fit(values)`` (scikit-learn 1.9) for float64 ``values`` of shape (n, 1), to the bit.

    ``fit`` initialises responsibilities with ``KMeans(2, n_init=1)`` and runs EM; almost all
    of its time (and most of a NEX process's start-up: importing scikit-learn) goes to input
    validation, thread-pool limits, seeding and array-API dispatch around a few small array
    operations. This performs those operations, the same ones in the same order on the same
    shapes, so the same numbers come out and a fit fails where ``fit`` raises.
    ``tests/test_nex_phases.py`` and ``tests/test_nex_fast.py`` hold it against ``fit``.
    """
    if not np.isfinite(values).all():  # what fit's input validation refuses
        raise ValueError("the mixture's input holds NaN or infinity")
    resp = np.zeros((values.shape[0], 2), dtype=values.dtype)
    resp[np.arange(values.shape[0]), kmeans_labels(values)] = 1
    squares = values * values  # scikit-learn's values ** 2 and values * values, both this product
    weights, means, variances, precision = _gaussian_parameters(values, squares, resp)
    weights /= values.shape[0]
    lower_bound = -np.inf
    for _ in range(MAX_ITER):
        previous = lower_bound
        lower_bound, log_resp = _expectation(values, squares, weights, means, precision)
        weights, means, variances, precision = _gaussian_parameters(values, squares, np.exp(log_resp))
        weights /= np.add.reduce(weights)
        if abs(lower_bound - previous) < TOL:
            break
    return means, variances


def kmeans_labels(values: np.ndarray) -> np.ndarray:
    """Labels of ``KMeans(2, n_init=1, random_state=0).fit(values)`` on one thread (scikit-learn 1.9's
    arithmetic: k-means++ seeding, then Lloyd steps on the centred values with BLAS-style distances
    |c|^2 - 2 x c, sums per cluster added in sample order, the reciprocal of the cluster size and
    the centre shift as scikit-learn's compiled step takes them, here in Python floats)."""
    x = np.array(values, dtype=np.float64, order="C", copy=True)
    tol = np.mean(np.var(x, axis=0)) * KMEANS_TOL
    x -= x.mean(axis=0)
    centers, old = _kmeans_plusplus(x)[:, 0].tolist(), None
    for _ in range(KMEANS_MAX_ITER):
        labels = _nearest(x[:, 0], centers)
        sums, sizes = _cluster_sums(x, centers, labels)
        heaviest = 0 if sizes[0] >= sizes[1] else 1
        for j in range(2):  # in order: an empty cluster takes the heaviest's centre as it stands
            sums[j] = sums[j] * (1.0 / sizes[j]) if sizes[j] > 0 else sums[heaviest]
        shift = [math.sqrt(0.0 + (new - c) * (new - c)) for new, c in zip(sums, centers)]
        centers = sums
        if old is not None and np.array_equal(labels, old):
            return labels.astype(np.int32)
        if shift[0] * shift[0] + shift[1] * shift[1] <= tol:
            break
        old = labels
    return _nearest(x[:, 0], centers).astype(np.int32)


def _kmeans_plusplus(x: np.ndarray) -> np.ndarray:
    """Two k-means++ centres (two local trials for the second), from RandomState(0)'s first three draws."""
    weight = np.ones(x.shape[0])
    norms = np.einsum("ij,ij->i", x, x)
    p = weight / weight.sum()
    cdf = p.cumsum()
    cdf /= cdf[-1]
    first = x[cdf.searchsorted(DRAWS[0], side="right")][np.newaxis]  # RandomState.choice(n, p=p)
    closest = np.maximum(-2 * (first @ x.T) + np.einsum("ij,ij->i", first, first)[:, None] + norms[None, :], 0)
    candidates = np.searchsorted(np.cumsum(weight * closest), DRAWS[1:] * (closest @ weight))
    np.clip(candidates, None, closest.size - 1, out=candidates)
    trial = x[candidates]
    distances = np.maximum(-2 * (trial @ x.T) + np.einsum("ij,ij->i", trial, trial)[:, None] + norms[None, :], 0)
    np.minimum(closest, distances, out=distances)
    return np.concatenate([first, x[candidates[np.argmin(distances @ weight.reshape(-1, 1))]][np.newaxis]])


def _nearest(x: np.ndarray, centers: list[float]) -> np.ndarray:
    """Whether each value is closer to the second centre (the first wins a tie), distances as a BLAS
    gemm rounds them: |c|^2 + (-2 (x c))."""
    (c0, c1) = centers
    return c1 * c1 + -2.0 * (x * c1) < c0 * c0 + -2.0 * (x * c0)


def _cluster_sums(x: np.ndarray, centers: list[float], second: np.ndarray) -> tuple[list[float], list[float]]:
    """Each cluster's sum, added in sample order from 0, and size; when a cluster is empty it takes the
    value farthest from its centre, as scikit-learn relocates it."""
    n_second = int(np.count_nonzero(second))
    if 0 < n_second < len(second):  # adding 0 for the other cluster's values leaves each running sum as it is
        sums = [np.cumsum(np.where(second, 0.0, x[:, 0]))[-1], np.cumsum(np.where(second, x[:, 0], 0.0))[-1]]
        return [float(s) for s in sums], [float(len(second) - n_second), float(n_second)]
    labels = second.astype(np.int32)
    sums = np.array([[np.cumsum(np.concatenate([[0.0], x[labels == j, 0]]))[-1]] for j in range(2)])
    size = np.bincount(labels, minlength=2).astype(np.float64)
    empty = int(np.flatnonzero(size == 0)[0])
    distances = ((x - np.array(centers)[:, None][labels]) ** 2).sum(axis=1)
    far = np.argpartition(distances, -1)[-1]
    if np.max(distances) != 0:
        sums[labels[far]] -= x[far] * 1.0
        sums[empty] = x[far] * 1.0
        size[empty], size[labels[far]] = 1.0, size[labels[far]] - 1.0
    return sums[:, 0].tolist(), size.tolist()


def _gaussian_parameters(values: np.ndarray, squares: np.ndarray, resp: np.ndarray) -> tuple[np.ndarray, ...]:
    """The mixture's M step: component masses, means, variances and precision Cholesky factors (1 / sd);
    a variance that is not positive raises ValueError, as scikit-learn's does."""
    nk = np.add.reduce(resp, axis=0) + NK_FLOOR
    means = (resp.T @ values) / nk[:, np.newaxis]
    variances = (resp.T @ squares) / nk[:, np.newaxis] - means**2 + REG_COVAR
    if (variances <= 0.0).any():
        raise ValueError("a mixture component has a variance that is not positive")
    return nk, means, variances, 1.0 / np.sqrt(variances)


def _expectation(values: np.ndarray, squares: np.ndarray, weights: np.ndarray, means: np.ndarray,
                 precision: np.ndarray) -> tuple[float, np.ndarray]:
    """The mixture's E step: the mean log-likelihood and the log responsibilities.

    scikit-learn's arithmetic with its two components as two columns: a sum over one feature is
    that feature's value, a max or sum over the two components is one elementwise operation, and
    the log-sum-exp keeps its handling of ties (``n_top``) and infinities."""
    squared = precision**2
    log_prob = (means**2 * squared)[:, 0] - 2.0 * (values @ (means * squared).T) + (squares @ squared.T)
    weighted = -0.5 * (LOG_2PI + log_prob) + np.log(precision)[:, 0] + np.log(weights)
    first, second = weighted[:, 0], weighted[:, 1]
    top = np.maximum(first, second)
    at_first, at_second = first == top, second == top
    n_top = at_first.astype(weighted.dtype) + at_second
    shift = np.where(np.isfinite(top), top, 0)
    total = np.exp(np.where(at_first, -np.inf, first) - shift) + np.exp(np.where(at_second, -np.inf, second) - shift)
    total = np.where(total == 0, total, total / n_top)
    log_norm = np.log1p(total) + np.log(n_top) + top
    with np.errstate(under="ignore"):
        log_resp = weighted - log_norm[:, np.newaxis]
    return np.add.reduce(log_norm) / len(log_norm), log_resp


def viterbi(values: np.ndarray, means: np.ndarray, variances: np.ndarray, rho: float) -> np.ndarray:
    """Most likely states of ``GaussianHMM(2, "diag")`` with start (0.5, 0.5), the sticky
    transitions and the given emissions: ``decode(values, algorithm="viterbi")`` less its
    input checks (hmmlearn's diagonal Gaussian log-densities, then its compiled Viterbi)."""
    variances = np.maximum(variances, np.finfo(float).tiny)
    with np.errstate(over="ignore"):
        frames = -0.5 * (means.shape[1] * np.log(2 * np.pi) + np.log(variances).sum(axis=-1)
                         + ((values[:, None, :] - means) ** 2 / variances).sum(axis=-1))
    return backends().hmmc.viterbi(np.asarray([0.5, 0.5]), sticky_transitions(rho), frames)[1]


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
    centre = float(median(residual))
    mad = float(median(np.abs(residual - centre)))
    zero = ROUNDING * (1.0 + float(np.abs(y).max())) if mad_rounding else 0.0
    if not np.isfinite(mad) or mad <= zero:
        centred = residual - centre
        explore, method, z = centred > zero, "sign", centred
    else:
        z = (residual - centre) / (mad + EPS)
        try:
            explore, method = hmm_explore(z, rho), "hmm"
        except Exception:  # the reference falls back on any failure of the mixture or the HMM
            explore, method = z > 0.0, "fallback"
    return Phases(y, residual, z, enforce_min_run(explore, int(min_run)), method)
