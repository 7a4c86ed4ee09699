"""The inverted U: accuracy against an exploration proxy, binned by quantiles, with a quadratic fit.

The proxy is mean token entropy, per response (0/1 correctness: a logistic fit with a
quadratic term) and per variant (its accuracy: a least-squares parabola); the test of the
quadratic term says whether the curve bends, and which way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nex_causal.errors import NexError
from nex_causal.selectors.pool import Pool, trace_mean
from nex_causal.stats import QuadraticFit, logistic_quadratic_fit, quadratic_fit


@dataclass(frozen=True)
class InvertedU:
    """Accuracy in quantile bins of the proxy, and the quadratic (or logistic-quadratic) fit to the raw points."""

    bins: pd.DataFrame  # bin, proxy_low, proxy_high, proxy_mean, accuracy, n
    fit: QuadraticFit | None  # None when no fit exists (``reason`` says why), the bins still stand
    reason: str = ""


def inverted_u(proxy: np.ndarray, accuracy: np.ndarray, *, n_bins: int = 10) -> InvertedU:
    """Bin ``accuracy`` by quantiles of ``proxy`` and fit accuracy ~ quadratic(proxy).

    The fit uses the individual points (responses or variants), not the bin means, so the
    test of the quadratic term has the points' degrees of freedom. 0/1 outcomes (responses)
    get a logistic regression with a quadratic term, whose curve stays inside [0, 1];
    accuracies in between (variants) a least-squares parabola.
    """
    proxy, accuracy = np.asarray(proxy, np.float64), np.asarray(accuracy, np.float64)
    keep = np.isfinite(proxy) & np.isfinite(accuracy)
    proxy, accuracy = proxy[keep], accuracy[keep]
    binary = np.isin(accuracy, (0.0, 1.0)).all()
    fit, reason = None, ""
    try:
        fit = (logistic_quadratic_fit if binary else quadratic_fit)(proxy, accuracy)
    except NexError as err:
        if len(proxy) < 4:
            raise
        reason = f"no fit: {err}"
    edges = np.unique(np.quantile(proxy, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, proxy, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": which, "proxy": proxy, "accuracy": accuracy})
    bins = frame.groupby("bin").agg(proxy_mean=("proxy", "mean"), accuracy=("accuracy", "mean"),
                                    n=("accuracy", "size")).reset_index()
    bins.insert(1, "proxy_low", edges[bins.bin])
    bins.insert(2, "proxy_high", edges[bins.bin + 1])
    return InvertedU(bins, fit, reason)


def exploration_curves(pools: Mapping[str, Pool], *, variant_accuracy: Mapping[str, float] | None = None,
                       n_bins: int = 10) -> dict[str, InvertedU | str]:
    """The inverted-U per response and per variant; a level whose fit cannot run maps to the reason.

    Per response the proxy is the response's mean token entropy and accuracy its ``correct``;
    per variant, the mean of those over the variant's responses and its accuracy
    (``variant_accuracy`` when given, else its mean ``correct``).
    """
    try:
        entropy = {v: pool.per_response(trace_mean, "token_entropy") for v, pool in pools.items()}
    except NexError as err:
        return {level: f"skipped: {err}" for level in ("response", "variant")}
    points = {
        "response": (np.concatenate(list(entropy.values())),
                     np.concatenate([pool.correct for pool in pools.values()])),
        "variant": (np.array([np.nanmean(e) for e in entropy.values()]),
                    np.array([pool.correct.mean() if variant_accuracy is None else variant_accuracy[v]
                              for v, pool in pools.items()])),
    }
    out: dict[str, InvertedU | str] = {}
    for level, (proxy, acc) in points.items():
        try:
            out[level] = inverted_u(proxy, acc, n_bins=n_bins)
        except NexError as err:
            out[level] = f"skipped: {err}"
    return out


def inverted_u_table(curves: Mapping[str, InvertedU | str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One summary row per level (fit, peak, test or the reason it was skipped) and all the bins."""
    rows, bins = [], []
    for level, curve in curves.items():
        if isinstance(curve, str):
            rows.append({"level": level, "status": curve})
            continue
        fit = curve.fit
        if fit is None:
            rows.append({"level": level, "n": int(curve.bins.n.sum()), "proxy_min": curve.bins.proxy_low.min(),
                         "proxy_max": curve.bins.proxy_high.max(), "status": curve.reason})
            bins.append(curve.bins.assign(level=level))
            continue
        rows.append({"level": level, "n": fit.n, "proxy_min": curve.bins.proxy_low.min(),
                     "proxy_max": curve.bins.proxy_high.max(), "c0": fit.coef[0], "c1": fit.coef[1],
                     "c2": fit.coef[2], "peak": fit.peak, "t_quadratic": fit.t_quadratic,
                     "p_quadratic": fit.p_quadratic, "r2": fit.r2, "link": fit.link, "shape": fit.shape,
                     "status": "ok"})
        bins.append(curve.bins.assign(level=level))
    columns = ["level", "bin", "proxy_low", "proxy_high", "proxy_mean", "accuracy", "n"]
    bins = pd.concat(bins, ignore_index=True)[columns] if bins else pd.DataFrame(columns=columns)
    return pd.DataFrame(rows), bins
