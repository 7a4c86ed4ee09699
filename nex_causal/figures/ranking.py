"""The family-ranking figures: the inverted U, and each score against accuracy across the family."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import DASHES, DOUBLE, INK, MARKERS, SINGLE, require, styled
from nex_causal.stats import spearman

def _by_source(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``table`` split by its ``caches`` column (one ranking per set of caches) when it has several."""
    if "caches" not in table or table["caches"].nunique() < 2:
        return [("", table)]
    return [(str(key), part) for key, part in table.groupby("caches", sort=False)]


def _suffix(source: str) -> str:
    return f" ({source})" if source else ""


@styled
def plot_inverted_u(bins: pd.DataFrame, fits: pd.DataFrame | None = None) -> Figure:
    """Accuracy against the exploration proxy in quantile bins, with the fitted parabola.

    ``bins`` (``ranking.inverted_u_table``'s second table): ``level`` ("response" or
    "variant", one panel each), ``proxy_low``, ``proxy_high``, ``proxy_mean``, ``accuracy``.
    ``fits`` (its first table): ``level``, ``c0``, ``c1``, ``c2``, ``peak``, ``p_quadratic``;
    the parabola was fitted to the raw points, so it is drawn only when given, with its
    peak and the p-value of the bend in the legend. A ``caches`` column with several
    values gives one series per set of caches.
    """
    require(bins, "inverted_u_bins", ["level", "proxy_low", "proxy_high", "proxy_mean", "accuracy"])
    fit_of = {}
    if fits is not None:
        require(fits, "inverted_u", ["level", "c0", "c1", "c2", "peak", "p_quadratic"])
        fit_of = {(source, row.level): row for source, part in _by_source(fits)
                  for row in part.itertuples() if np.isfinite(row.c2)}
    levels = list(dict.fromkeys(bins["level"]))
    fig = Figure(figsize=(DOUBLE if len(levels) > 1 else SINGLE, 2.2), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False).ravel()
    for ax, level in zip(axes, levels):
        for k, (source, part) in enumerate(_by_source(bins[bins["level"] == level])):
            ax.errorbar(part["proxy_mean"], part["accuracy"],
                        xerr=np.vstack([part["proxy_mean"] - part["proxy_low"],
                                        part["proxy_high"] - part["proxy_mean"]]),
                        linestyle="none", marker=MARKERS[k % len(MARKERS)], color=INK[0], mfc="white",
                        ecolor=INK[2], elinewidth=0.6, capsize=0, label=f"{level}s, quantile bins{_suffix(source)}")
            fit = fit_of.get((source, level))
            if fit is not None:
                grid = np.linspace(part["proxy_low"].min(), part["proxy_high"].max(), 200)
                peak = f", peak {fit.peak:.3g}" if np.isfinite(fit.peak) else ""
                ax.plot(grid, fit.c0 + fit.c1 * grid + fit.c2 * grid**2, color=INK[1],
                        linestyle=DASHES[(k + 1) % len(DASHES)],
                        label=f"quadratic fit (p = {fit.p_quadratic:.2g}{peak}){_suffix(source)}")
        ax.set_title(f"per {level}")
        ax.set_xlabel("mean token entropy (exploration proxy)")
        ax.legend(loc="lower center")
    axes[0].set_ylabel("accuracy")
    return fig


@styled
def plot_scores_vs_accuracy(scores: pd.DataFrame, correlations: pd.DataFrame | None = None) -> Figure:
    """Each score against accuracy across the merge family, one panel per score, NEX first.

    ``scores`` (``ranking.rank(...).variants``): one row per variant with ``accuracy`` and
    one column per score. ``correlations`` (``ranking.rank(...).table``): ``score``,
    ``direction``, ``spearman``, ``spearman_low``, ``spearman_high``; it gives the
    bootstrap interval and the direction in which each score is claimed to track accuracy.
    The legend carries Spearman's rho of the plotted points (a score with direction -1 is
    claimed to work when its rho is negative; the x label says so). A ``caches`` column
    with several values gives one series per set of caches.
    """
    require(scores, "ranking_scores", ["accuracy"])
    names = [c for c in scores.select_dtypes("number").columns if c != "accuracy"]
    names.sort(key=lambda c: c != "nex")
    if not names:
        raise NexError("the ranking_scores table holds no score column beside accuracy")
    claimed = {}
    if correlations is not None:
        require(correlations, "ranking", ["score", "direction", "spearman", "spearman_low", "spearman_high"])
        claimed = {(source, row.score): row for source, part in _by_source(correlations)
                   for row in part.itertuples()}
    cols = min(len(names), 3)
    nrows = -(-len(names) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, name in zip(axes, names):
        direction = 1
        for k, (source, part) in enumerate(_by_source(scores)):
            rho = spearman(part[name].to_numpy(), part["accuracy"].to_numpy())
            label = f"Spearman ρ = {rho:.2f}"
            row = claimed.get((source, name))
            if row is not None:
                direction = row.direction
                if np.isfinite(row.spearman_low):  # the table's rho is of direction * score
                    low, high = sorted((direction * row.spearman_low, direction * row.spearman_high))
                    label += f" [{low:.2f}, {high:.2f}]"
            nex = name == "nex"
            ax.plot(part[name], part["accuracy"], linestyle="none", marker=MARKERS[k % len(MARKERS)],
                    color=INK[0] if nex else INK[1], mfc=INK[0] if nex else "white", label=label + _suffix(source))
        ax.set_xlabel(name + (" (claimed: lower is better)" if direction < 0 else ""))
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), handletextpad=0.2, borderaxespad=0.1)
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig



FIGURES.add("inverted_u", FigureSpec(("inverted_u_bins",), plot_inverted_u, optional=("inverted_u",)))
FIGURES.add("nex_vs_accuracy", FigureSpec(("ranking_scores",), plot_scores_vs_accuracy, optional=("ranking",)))
