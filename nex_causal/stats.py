"""Bootstrap intervals over prompts, permutation p-values and detectable effects, rank correlations, a trend test.

Prompts are the unit that was sampled, so they are what the bootstrap resamples; when
several variants or selectors are compared on the same prompts, one resample is shared by
all of them (paired comparison). A resample is represented by how many times it draws
each prompt (a row of ``counts``), which lets statistics that are sums over prompts be
evaluated for every resample at once with one matrix product; the jackknife behind the BCa
interval is the same statistic on the leave-one-out count vectors. Rank statistics over a few
variants get an exact permutation p (every order of the variants) rather than a bootstrap alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from nex_causal.errors import NexError


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval (arrays for vector statistics)."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def width(self) -> np.ndarray:
        return self.high - self.low


MAX_JACKKNIFE = 1000  # beyond this many items the jackknife leaves out groups, not single items
_CHUNK = 1 << 22  # count-matrix entries handed to a statistic at once


def resample_counts(n: int, *, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` multiplicities: row b counts how often bootstrap sample b draws item i."""
    if n < 1 or n_boot < 1:
        raise NexError(f"bootstrap needs at least one item and one resample (got n={n}, n_boot={n_boot})")
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def jackknife(statistic: Callable[[np.ndarray], np.ndarray], n: int, *, seed: int = 0) -> np.ndarray:
    """``statistic`` with each item left out in turn (``[n]`` or ``[n, m]``), from the ``n`` leave-one-out
    count vectors; beyond ``MAX_JACKKNIFE`` items, with each of ``MAX_JACKKNIFE`` random equal groups left
    out, which estimates the same acceleration at a cost that stays bounded."""
    groups = np.arange(n) if n <= MAX_JACKKNIFE else np.random.default_rng(seed).permutation(n) % MAX_JACKKNIFE
    n_groups = int(groups.max()) + 1
    step = max(1, _CHUNK // n)
    with np.errstate(invalid="ignore", divide="ignore"):  # undefined without an item: NaN, left out by bca
        parts = [np.asarray(statistic((groups[None, :] != np.arange(g, min(g + step, n_groups))[:, None])
                                      .astype(np.int64)), dtype=float)
                 for g in range(0, n_groups, step)]
    return np.concatenate(parts)


def _quantiles(replicates: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each column's quantile at its own level (``[B, m]``, ``[2, m]`` -> ``[2, m]``), NaNs left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        return np.stack([np.nanquantile(replicates[:, j], levels[:, j]) if np.isfinite(levels[:, j]).all()
                         else np.full(2, np.nan) for j in range(replicates.shape[1])], axis=1)


def bca(estimate: np.ndarray, replicates: np.ndarray, jackknifed: np.ndarray, *, level: float = 0.95) -> Interval:
    """The bias-corrected and accelerated interval (Efron 1987) from bootstrap ``replicates`` ``[B(, m)]``
    and the jackknife values ``[n(, m)]`` of a statistic whose full-sample value is ``estimate``.

    The interval is read at the replicates' quantiles ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))``, ``z``
    the normal quantiles of ``level``. The bias correction takes the mid-rank of the estimate among the
    replicates, ``z0 = Phi^-1((#{rep < est} + #{rep == est} / 2) / B)``, so that a discrete bootstrap
    distribution with many values equal to the estimate (Spearman over a few variants) is not read as
    biased; the acceleration is ``a = sum(d^3) / (6 (sum d^2)^1.5)``, ``d`` the jackknife values'
    deviations from their mean (0 when they do not vary). NaN replicates and jackknife values are left out.

    Guarantee: ``low <= estimate <= high`` wherever the estimate is finite. Where the estimate lies outside
    the central ``level`` of its own bootstrap distribution (``|z0| >= z``: the percentile interval leaves
    it out), the correction reads the far tail, which gives a spuriously narrow interval that can still
    leave the estimate out; there the interval is the percentile one widened to the estimate. Any
    remaining gap (interpolation between discrete values) is closed by moving the bound to the estimate.
    """
    est = np.asarray(estimate, dtype=float)
    shape = est.shape
    rep = np.asarray(replicates, dtype=float).reshape(len(replicates), -1)
    jack = np.asarray(jackknifed, dtype=float).reshape(len(jackknifed), -1)
    flat = est.reshape(-1)
    z = sps.norm.ppf([(1 - level) / 2, (1 + level) / 2])[:, None]  # [2, 1]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns without values: NaN bounds
        valid = np.isfinite(rep).sum(axis=0)
        tie = np.abs(rep - flat) <= 1e-12 * np.maximum(1.0, np.abs(flat))  # equal up to rounding
        z0 = sps.norm.ppf((((rep < flat) & ~tie).sum(axis=0) + tie.sum(axis=0) / 2) / valid)
        d = np.nanmean(jack, axis=0) - jack
        spread = np.nansum(d**2, axis=0)
        a = np.where(spread > 0, np.nansum(d**3, axis=0) / (6 * spread**1.5), 0.0)
        w = z0 + z
        denominator = 1 - a * w
        levels = np.where(denominator > 0, sps.norm.cdf(z0 + w / denominator), (w > 0).astype(float))
        levels = np.where(np.abs(z0) < z[1], levels, sps.norm.cdf(z))  # too biased to correct: percentile
        levels[:, ~np.isfinite(flat) | (valid == 0)] = np.nan
    low, high = _quantiles(rep, levels)
    low, high = np.minimum(low, flat), np.maximum(high, flat)  # NaN where either is
    return Interval(est, low.reshape(shape), high.reshape(shape))


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, *, n_boot: int = 1000,
              level: float = 0.95, seed: int = 0, method: Literal["bca", "percentile"] = "bca") -> Interval:
    """Bootstrap interval of ``statistic`` over ``n`` items (prompts): BCa by default (see :func:`bca`,
    which also guarantees that the interval holds the estimate), or the plain percentile interval,
    kept for comparison, which can leave its own estimate out when the statistic is biased or skewed.

    ``statistic(counts)`` takes a ``[B, n]`` multiplicity matrix and returns ``[B]`` or
    ``[B, m]`` values, one per resample; the estimate is its value on the full sample (all
    counts 1), the jackknife its value on the leave-one-out count vectors. Resamples where the
    statistic is undefined (NaN) are left out of the interval.
    """
    if not 0 < level < 1:
        raise NexError(f"confidence level must lie in (0, 1), got {level}")
    if method not in ("bca", "percentile"):
        raise NexError(f"unknown bootstrap interval {method!r}; use bca or percentile")
    estimate = np.asarray(statistic(np.ones((1, n), dtype=np.int64)), dtype=float)[0]
    replicates = np.asarray(statistic(resample_counts(n, n_boot=n_boot, seed=seed)), dtype=float)
    if method == "bca":
        return bca(estimate, replicates, jackknife(statistic, n, seed=seed), level=level)
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN bounds
        low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return Interval(estimate, low, high)


def null_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value of ``observed`` against a null sample: ``(1 + #{null >= observed}) / (1 + n)``.

    Exact when ``observed`` is exchangeable with the null draws under the null hypothesis
    (the effective set is just another layer-matched random set); its floor is ``1 / (1 + n)``.
    """
    null = np.asarray(null, dtype=float)
    if not len(null) or np.isnan(observed):
        return float("nan")
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))


def sign_flip_p_value(differences: np.ndarray, *, n_perm: int = 10000, seed: int = 0) -> float:
    """One-sided paired permutation p-value that the mean of ``differences`` (one per prompt) exceeds 0.

    Each resample flips the sign of every prompt's difference at random (exchangeable under
    the null of a symmetric difference around 0); ``(1 + #{perm >= observed}) / (1 + n_perm)``.
    """
    d = np.asarray(differences, dtype=float)
    if not len(d):
        return float("nan")
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(d)))
    observed = d.mean()
    return float((1 + np.sum(signs @ d / len(d) >= observed - 1e-12 * max(1.0, abs(observed)))) / (1 + n_perm))


def minimum_detectable_effect(standard_error: float, *, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true effect a one-sided test at ``1 - level`` detects with probability ``power``:
    ``(z_level + z_power) * standard_error`` (normal approximation)."""
    return float((sps.norm.ppf(level) + sps.norm.ppf(power)) * standard_error)


def weighted_mean(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic "mean of ``values`` over the resampled items", for :func:`bootstrap`."""
    values = np.asarray(values, dtype=float)
    return lambda counts: counts @ values / counts.sum(axis=1)


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise NexError(f"correlation needs paired values, got shapes {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def rank_correlations(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho and Kendall's tau-b of each row of ``x`` [B, V] against the same row of ``y``.

    Row-wise, so that thousands of bootstrap resamples cost one vectorised pass. Pairs with
    a non-finite side are left out of their row; a row with fewer than two pairs or a
    constant side gets NaN. Spearman is the Pearson correlation of average ranks; tau-b is
    sum sx*sy / sqrt(sum sx^2 * sum sy^2) over pairs i < j, with sx = sign(x_i - x_j) (both
    as scipy.stats defines them).
    """
    x, y = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    if x.shape != y.shape:
        raise NexError(f"correlation needs paired values, got shapes {x.shape} and {y.shape}")
    valid = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(valid, x, np.nan), np.where(valid, y, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without pairs: NaN, set below
        rx, ry = (sps.rankdata(v, axis=1, nan_policy="omit") for v in (x, y))
        rx, ry = rx - np.nanmean(rx, axis=1, keepdims=True), ry - np.nanmean(ry, axis=1, keepdims=True)
        rho = np.nansum(rx * ry, axis=1) / np.sqrt(np.nansum(rx**2, axis=1) * np.nansum(ry**2, axis=1))
        upper = np.triu(np.ones(x.shape[1], dtype=bool), 1)
        sx = np.nan_to_num(np.sign(x[:, :, None] - x[:, None, :]))[:, upper]
        sy = np.nan_to_num(np.sign(y[:, :, None] - y[:, None, :]))[:, upper]
        tau = (sx * sy).sum(axis=1) / np.sqrt((sx**2).sum(axis=1) * (sy**2).sum(axis=1))
    undefined = valid.sum(axis=1) < 2
    rho[undefined], tau[undefined] = np.nan, np.nan
    return rho, tau


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two 1-D arrays over the pairs where both are finite; NaN when undefined."""
    return float(rank_correlations(x, y)[0][0])


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two 1-D arrays over the pairs where both are finite; NaN when undefined."""
    return float(rank_correlations(x, y)[1][0])


def orders(n: int) -> np.ndarray:
    """All ``n!`` orders of ``range(n)`` as an ``[n!, n]`` array (lexicographic), built without a Python loop
    over the orders: those of ``n`` are each first element followed by the orders of the rest."""
    out = np.zeros((1, 0), dtype=np.int8)
    for m in range(1, n + 1):  # the orders of m from those of m - 1
        out = np.concatenate([np.column_stack([np.full(len(out), first, np.int8), out + (out >= first)])
                              for first in range(m)])
    return out


def _permuted_statistic(rx: np.ndarray, y: np.ndarray, order: np.ndarray, statistic: str) -> np.ndarray:
    """The unnormalised statistic of ``x`` against ``y`` read in each row of ``order`` (``[P, n]``):
    sum of centred-rank products (Spearman), or of pair-sign products (Kendall). Their denominators
    depend only on the tie structure, which reordering keeps."""
    if statistic == "spearman":
        return (rx - rx.mean()) @ (y - y.mean())[order].T
    i, j = np.triu_indices(len(rx), 1)
    sx = np.sign(rx[i] - rx[j])
    yo = y[order]
    return np.sign(yo[:, i] - yo[:, j]) @ sx


def permutation_p(x: np.ndarray, y: np.ndarray, *, statistic: Literal["spearman", "kendall"] = "spearman",
                  alternative: Literal["greater", "less", "two-sided"] = "greater", max_exact: int = 9,
                  n_perm: int = 200_000, seed: int = 0) -> tuple[float, str]:
    """Permutation p-value of Spearman's rho or Kendall's tau-b between ``x`` and ``y`` over few items, and
    how it was computed.

    The null is that every order of ``y`` against ``x`` is equally likely (exchangeable items, e.g. the
    variants of a family). With ``n <= max_exact`` finite pairs every one of the ``n!`` orders is scored
    (9! in well under a second): ``p = #{T >= t} / n!``, exact; beyond, ``n_perm`` random orders give
    ``p = (1 + #{T >= t}) / (1 + n_perm)`` (Monte Carlo, valid). ``alternative``: "greater" (the
    statistic exceeds chance), "less", or "two-sided" (``|T| >= |t|``; T is centred at 0 under the null).
    Ties get average ranks, as :func:`spearman` and :func:`kendall` give them. NaN with "undefined" when
    fewer than 2 pairs remain or a side is constant.
    """
    if statistic not in ("spearman", "kendall") or alternative not in ("greater", "less", "two-sided"):
        raise NexError(f"permutation_p: unknown statistic {statistic!r} or alternative {alternative!r}")
    x, y = _finite_pairs(x, y)
    n = len(x)
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), "undefined"
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    observed = _permuted_statistic(rx, ry, np.arange(n)[None], statistic)[0]
    tolerance = 1e-9 * max(1.0, abs(observed))

    def extreme(values: np.ndarray) -> int:
        if alternative == "greater":
            return int(np.sum(values >= observed - tolerance))
        if alternative == "less":
            return int(np.sum(values <= observed + tolerance))
        return int(np.sum(np.abs(values) >= abs(observed) - tolerance))

    step = max(1, _CHUNK // (n * n))  # orders scored at once
    if n <= max_exact:
        every, total = orders(n), math.factorial(n)
        hits = sum(extreme(_permuted_statistic(rx, ry, every[k:k + step], statistic)) for k in range(0, total, step))
        return hits / total, f"exact over {total} orders"
    rng, hits = np.random.default_rng(seed), 0
    for start in range(0, n_perm, step):
        draws = rng.permuted(np.tile(np.arange(n), (min(step, n_perm - start), 1)), axis=1)
        hits += extreme(_permuted_statistic(rx, ry, draws, statistic))
    return (1 + hits) / (1 + n_perm), f"Monte Carlo, {n_perm} random orders"


@dataclass(frozen=True)
class QuadraticFit:
    """``y = c0 + c1 x + c2 x^2`` (``link`` "identity") or ``logit P(y=1) = ...`` ("logit"), with a
    test of the quadratic term (t for least squares, Wald z for the logistic fit)."""

    coef: tuple[float, float, float]
    peak: float  # the vertex -c1 / (2 c2) when c2 < 0 (an inverted U), NaN otherwise
    t_quadratic: float
    p_quadratic: float  # two-sided p-value of c2 = 0
    r2: float  # R^2, or McFadden's pseudo-R^2 for the logistic fit
    n: int
    link: str = "identity"

    @property
    def shape(self) -> str:
        """"inverted U" when the fit bends down (c2 < 0), "U" when it bends up, "line" when flat."""
        c2 = self.coef[2]
        return "inverted U" if c2 < 0 else "U" if c2 > 0 else "line"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted mean at ``x`` (a probability for the logistic fit)."""
        x = np.asarray(x, dtype=float)
        eta = self.coef[0] + self.coef[1] * x + self.coef[2] * x**2
        return sps.logistic.cdf(eta) if self.link == "logit" else eta


def _quadratic_design(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    x, y = _finite_pairs(x, y)
    if len(x) < 4 or len(np.unique(x)) < 3:
        raise NexError(f"a quadratic fit needs at least 4 points at 3 distinct x values, got {len(x)}")
    mid = x.mean()
    return x, y, mid, np.column_stack([np.ones(len(x)), x - mid, (x - mid) ** 2])


def _uncentred(a: float, b: float, c: float, mid: float) -> tuple[float, float, float]:
    """Coefficients fitted in ``x - mid`` expressed in ``x``."""
    return float(a - b * mid + c * mid**2), float(b - 2 * c * mid), float(c)


def _vertex(b: float, c: float, mid: float) -> float:
    return float(mid - b / (2 * c)) if c < 0 else float("nan")


def quadratic_fit(x: np.ndarray, y: np.ndarray) -> QuadraticFit:
    """Fit a parabola to the finite ``(x, y)`` pairs and test whether it bends.

    The fit is done in ``x - mean(x)`` for conditioning (the quadratic coefficient and its
    standard error do not depend on the shift) and reported in the original ``x``.
    """
    x, y, mid, design = _quadratic_design(x, y)
    n = len(x)
    (a, b, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ np.array([a, b, c])
    dof = n - 3
    sigma2 = residual @ residual / dof
    se_c = np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[2, 2])
    if se_c > 0:
        t = c / se_c
    else:  # an exact fit: the quadratic term is either certainly there or certainly absent
        t = np.copysign(np.inf, c) if c else 0.0
    p = float(2 * sps.t.sf(abs(t), dof))
    total = ((y - y.mean()) ** 2).sum()
    r2 = float(1 - residual @ residual / total) if total > 0 else float("nan")
    return QuadraticFit(_uncentred(a, b, c, mid), _vertex(b, c, mid), float(t), p, r2, n)


def logistic_quadratic_fit(x: np.ndarray, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-10
                           ) -> QuadraticFit:
    """Logistic regression of 0/1 outcomes ``y`` on ``x`` and ``x^2`` (Newton-Raphson), with the
    Wald test of the quadratic term.

    The right model for per-response correctness: a least-squares parabola on 0/1 points
    predicts values outside [0, 1]. Fails with one line when the outcomes are not 0/1, are
    all equal, or are separated perfectly (the maximum-likelihood fit does not exist).
    """
    x, y, mid, design = _quadratic_design(x, y)
    if not np.isin(y, (0.0, 1.0)).all():
        raise NexError("a logistic fit needs 0/1 outcomes; use quadratic_fit for means")
    if y.min() == y.max():
        raise NexError(f"a logistic fit needs both outcomes, got only {int(y[0])}s")
    scale = design.std(axis=0)
    scale[0] = 1.0
    scale[scale == 0] = 1.0
    z = design / scale  # standardized columns: Newton steps stay well scaled

    def loglik(beta: np.ndarray) -> float:
        eta = z @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    separated = NexError("the outcomes are (nearly) perfectly separated by the proxy: no logistic fit exists")
    beta = np.array([np.log(y.mean() / (1 - y.mean())), 0.0, 0.0])
    current = loglik(beta)
    for _ in range(max_iter):
        prob = sps.logistic.cdf(z @ beta)
        info = z.T @ (z * (prob * (1 - prob))[:, None])
        try:
            step = np.linalg.solve(info, z.T @ (y - prob))
        except np.linalg.LinAlgError:
            raise separated from None
        for _ in range(30):  # halve the Newton step until the likelihood does not fall
            trial = loglik(beta + step)
            if trial >= current - 1e-12:
                break
            step = step / 2
        beta, current = beta + step, trial
        if np.abs(step).max() < tol:
            break
    prob = sps.logistic.cdf(z @ beta)
    if not np.isfinite(beta).all() or np.abs(beta).max() > 30 or prob.min() < 1e-12 or prob.max() > 1 - 1e-12:
        raise separated
    info = z.T @ (z * (prob * (1 - prob))[:, None])
    a, b, c = beta / scale
    se_c = float(np.sqrt(np.linalg.inv(info)[2, 2])) / scale[2]
    wald = c / se_c
    base = y.mean()
    null = float(len(y) * (base * np.log(base) + (1 - base) * np.log(1 - base)))
    return QuadraticFit(_uncentred(a, b, c, mid), _vertex(b, c, mid), float(wald),
                        float(2 * sps.norm.sf(abs(wald))), 1 - current / null, len(x), link="logit")
