"""The family-ranking figures: the inverted U, and each score against accuracy across the family."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nex_causal.errors import NexError
from nex_causal.figures.registry import FIGURES, FigureSpec
from nex_causal.figures.style import (
    DASHES,
    DOUBLE,
    INK,
    MARKERS,
    SINGLE,
    require,
    styled,
)
from nex_causal.ranking.agreement import score_column
from nex_causal.stats import QuadraticFit, spearman


def _by_source(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``table`` split by its ``caches`` column (one ranking per set of caches) when it has several."""
    if "caches" not in table or table["caches"].nunique() < 2:
        return [("", table)]
    return [(str(key), part) for key, part in table.groupby("caches", sort=False)]


def _suffix(source: str) -> str:
    return f" ({source})" if source else ""


def _fits(fits: pd.DataFrame | None) -> dict[tuple[str, str], QuadraticFit]:
    """Each (caches, level) row of an inverted_u table that holds a fit, as the fit itself."""
    if fits is None:
        return {}
    require(fits, "inverted_u", ["level", "c0", "c1", "c2", "peak", "t_quadratic", "p_quadratic"])
    return {(source, row.level): QuadraticFit((row.c0, row.c1, row.c2), row.peak, row.t_quadratic,
                                              row.p_quadratic, getattr(row, "r2", np.nan), getattr(row, "n", np.nan),
                                              getattr(row, "link", "identity"))
            for source, part in _by_source(fits) for row in part.itertuples() if np.isfinite(row.c2)}


@styled
def plot_inverted_u(bins: pd.DataFrame, fits: pd.DataFrame | None = None) -> Figure:
    """Accuracy against the exploration proxy in quantile bins, with the fitted curve.

    ``bins`` (``ranking.inverted_u_table``'s second table): ``level`` ("response" or
    "variant", one panel each), ``proxy_low``, ``proxy_high``, ``proxy_mean``, ``accuracy``.
    ``fits`` (its first table): ``level``, ``c0``, ``c1``, ``c2``, ``peak``, ``p_quadratic``,
    ``link`` ("logit": a logistic regression with a quadratic term, fitted to 0/1 responses;
    else a least-squares parabola). The fit was made on the raw points, so it is drawn only
    when given, over the range of the data only, with its shape (inverted U or U), peak and
    the test of the quadratic term in the legend. A ``caches`` column with several values
    gives one series per set of caches.
    """
    require(bins, "inverted_u_bins", ["level", "proxy_low", "proxy_high", "proxy_mean", "accuracy"])
    fit_of = _fits(fits)
    levels = list(dict.fromkeys(bins["level"]))
    fig = Figure(figsize=(DOUBLE if len(levels) > 1 else SINGLE, 3.0), layout="constrained")
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
                grid = np.linspace(part["proxy_low"].min(), part["proxy_high"].max(), 200)  # the data's range
                peak = f", peak {fit.peak:.3g}" if np.isfinite(fit.peak) else ""
                kind, test = ("logistic-quadratic", "z") if fit.link == "logit" else ("quadratic", "t")
                ax.plot(grid, fit.predict(grid), color=INK[1], linestyle=DASHES[(k + 1) % len(DASHES)],
                        label=f"{kind} fit: {fit.shape}{peak}\n({test} = {fit.t_quadratic:.2f}, "
                              f"p = {fit.p_quadratic:.2g}){_suffix(source)}")
        ax.set_title(f"per {level}")
        ax.set_xlabel("mean token entropy (exploration proxy)")
        ax.set_ylim(-0.03, 1.03)
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.22), borderaxespad=0)
    axes[0].set_ylabel("accuracy")
    return fig


def caption_inverted_u(bins: pd.DataFrame, fits: pd.DataFrame | None = None) -> str:
    """What the inverted-U figure shows, each level's fit, its test and the sign of its curvature."""
    parts = [f"Accuracy against mean token entropy (the exploration proxy) in quantile bins "
             f"({bins.groupby('level').size().max()} per panel at most); horizontal bars span each bin."]
    for (source, level), fit in _fits(fits).items():
        logistic = fit.link == "logit"
        model = ("a logistic regression of correctness on entropy and its square" if logistic
                 else "a least-squares parabola")
        peak = f", peaking at {fit.peak:.3g}" if np.isfinite(fit.peak) else ""
        n = f"n = {int(fit.n)}, " if np.isfinite(fit.n) else ""
        parts.append(f"Per {level}{_suffix(source)}: {model} ({n}{'Wald z' if logistic else 't'} of the "
                     f"quadratic term {fit.t_quadratic:.2f}, p = {fit.p_quadratic:.2g}) bends as "
                     f"{'an' if fit.shape == 'inverted U' else 'a'} {fit.shape}{peak}; drawn over the data's "
                     "range only.")
    return " ".join(parts)


def _calibration(row: object) -> str:
    """A ranking row's NEX calibration ("" for scores without one, and in tables from before calibrations)."""
    value = getattr(row, "calibration", "")
    return value if isinstance(value, str) else ""


def _oriented(correlations: pd.DataFrame | None) -> dict[tuple[str, str], object]:
    """The ranking table's row of each (caches, per-variant column): a NEX row under its calibration belongs
    to the column ``ranking.rank`` wrote for that calibration (``nex`` self, ``nex[pooled]`` pooled)."""
    if correlations is None:
        return {}
    require(correlations, "ranking", ["score", "direction", "spearman", "spearman_low", "spearman_high"])
    return {(source, score_column(row.score, _calibration(row))): row
            for source, part in _by_source(correlations) for row in part.itertuples()}


def _direction(claimed: dict, name: str) -> int:
    return int(next((row.direction for (_, score), row in claimed.items() if score == name), 1))


CALIBRATED = {"self": "self-calibrated", "given": "given weights", "pooled": "pooled calibration",
              "cross": "cross calibration", "split": "split calibration"}


def _axis_label(name: str, direction: int, claimed: dict) -> str:
    """The score's name as drawn: negated when lower is claimed better, with NEX's calibration when known."""
    row = next((row for (_, score), row in claimed.items() if score == name), None)
    calibration = _calibration(row) if row is not None else ""
    shown = f"{row.score} ({CALIBRATED.get(calibration, calibration)})" if calibration else name
    return shown if direction > 0 else f"−{shown} (claimed: lower is better)"


def _legend(row: object | None, oriented: np.ndarray, accuracy: np.ndarray) -> str:
    """Spearman's rho as the table gives it (interval, permutation p) or, without the table, of the points."""
    if row is None or not np.isfinite(row.spearman):
        return f"ρ = {spearman(oriented, accuracy):+.2f}"
    label = f"ρ = {row.spearman:+.2f}"
    if np.isfinite(row.spearman_low):
        label += f" [{row.spearman_low:+.2f}, {row.spearman_high:+.2f}]"
    if np.isfinite(getattr(row, "spearman_p", np.nan)):
        label += f", p = {row.spearman_p:.2g}"
    return label


@styled
def plot_scores_vs_accuracy(scores: pd.DataFrame, correlations: pd.DataFrame | None = None) -> Figure:
    """Each score against accuracy across the merge family, one panel per score, NEX first.

    ``scores`` (``ranking.rank(...).variants``): one row per variant with ``accuracy`` and
    one column per score (``nex`` self-calibrated, ``nex[pooled]`` and so on). ``correlations``
    (``ranking.rank(...).table``): ``score``, ``calibration``, ``direction``, ``spearman``,
    ``spearman_low``, ``spearman_high``, ``spearman_p``. Each score is drawn oriented as the
    ranking table reads it (``direction * score``, so that higher is claimed to mean more accurate;
    the axis label says when it was negated and names NEX's calibration), and the legend carries the
    table's row for the column drawn: Spearman's rho with its bootstrap interval and permutation p
    (without the table: rho of the plotted points). A ``caches`` column with several values gives
    one series per set of caches.
    """
    require(scores, "ranking_scores", ["accuracy"])
    names = [c for c in scores.select_dtypes("number").columns if c != "accuracy"]
    names.sort(key=lambda c: not c.startswith("nex"))
    if not names:
        raise NexError("the ranking_scores table holds no score column beside accuracy")
    claimed = _oriented(correlations)
    cols = min(len(names), 3)
    nrows = -(-len(names) // cols)
    fig = Figure(figsize=(DOUBLE if cols > 1 else SINGLE, 2.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True).ravel()
    for ax, name in zip(axes, names):
        direction = _direction(claimed, name)
        for k, (source, part) in enumerate(_by_source(scores)):
            oriented = direction * part[name].to_numpy(dtype=float)
            nex = name.startswith("nex")
            ax.plot(oriented, part["accuracy"], linestyle="none", marker=MARKERS[k % len(MARKERS)],
                    color=INK[0] if nex else INK[1], mfc=INK[0] if nex else "white",
                    label=_legend(claimed.get((source, name)), oriented, part["accuracy"].to_numpy()) + _suffix(source))
        ax.set_xlabel(_axis_label(name, direction, claimed))
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1), handletextpad=0.2, borderaxespad=0.1)
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


def caption_scores_vs_accuracy(scores: pd.DataFrame, correlations: pd.DataFrame | None = None) -> str:
    """What the score-against-accuracy panels show, and how they are oriented."""
    names = [c for c in scores.select_dtypes("number").columns if c != "accuracy"]
    claimed = _oriented(correlations)
    negated = [n for n in names if _direction(claimed, n) < 0]
    n_variants = len(scores) if "caches" not in scores else scores.groupby("caches").size().max()
    text = (f"Each label-free score of the {n_variants} variants of the family against their accuracy, "
            "one point per variant (NEX filled). Scores are oriented so that higher is claimed to mean more "
            "accurate")
    text += f" ({', '.join(negated)} negated)." if negated else "."
    if claimed:
        text += (" Legends give the ranking table's row for the score drawn (NEX under the calibration its axis "
                 "names): Spearman's rho between the oriented score and accuracy with its 95% bootstrap interval "
                 "over prompts")
        text += (", and p, the one-sided permutation p over variants (that a random order of the variants agrees "
                 "as well)." if "spearman_p" in correlations else ".")
    return text


FIGURES.add("inverted_u", FigureSpec(("inverted_u_bins",), plot_inverted_u, caption_inverted_u,
                                     optional=("inverted_u",)))
FIGURES.add("nex_vs_accuracy", FigureSpec(("ranking_scores",), plot_scores_vs_accuracy, caption_scores_vs_accuracy,
                                          optional=("ranking",)))


@styled
def plot_nex_cross(cross: pd.DataFrame) -> Figure:
    """The cross calibration: mean GMF of every variant's cache (columns) under every variant's weights (rows).

    ``cross``: ``weights``, ``scored``, ``nex`` (``ranking.agreement``'s ``nex_cross`` table). The diagonal is
    the authors' self-calibration; a row that is uniformly high says those weights call everything effective.
    """
    require(cross, "nex_cross", ["weights", "scored", "nex"])
    names = list(dict.fromkeys(cross["weights"]))
    matrix = cross.pivot(index="weights", columns="scored", values="nex").reindex(index=names, columns=names)
    size = min(DOUBLE, 1.2 + 0.22 * len(names))
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(float), cmap="Greys", aspect="equal")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("cache scored")
    ax.set_ylabel("weights learned on")
    fig.colorbar(image, ax=ax, shrink=0.8, label="mean GMF")
    return fig


def caption_nex_cross(cross: pd.DataFrame) -> str:
    """What the cross-calibration heatmap shows."""
    values = cross["nex"].to_numpy(float)
    diagonal = cross.loc[cross["weights"] == cross["scored"], "nex"].to_numpy(float)
    return (f"Mean GMF of each of {cross['scored'].nunique()} variants' caches (columns) under the NEX weights "
            f"learned on each variant's cache (rows); the diagonal is self-calibration, the authors' protocol "
            f"(from {np.nanmin(diagonal):.3f} to {np.nanmax(diagonal):.3f}), off the diagonal from "
            f"{np.nanmin(values):.3f} to {np.nanmax(values):.3f}.")


FIGURES.add("nex_cross", FigureSpec(("nex_cross",), plot_nex_cross, caption_nex_cross))
